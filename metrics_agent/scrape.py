"""Application gauges scraped from the backend's Prometheus text endpoint (``--scrape URL``).

Only a handful of series matter (``schema.APP_METRICS``), so the parser is a single pass that looks
at a line's metric name and skips everything else; it follows the text exposition format
(https://prometheus.io/docs/instrumenting/exposition_formats/): ``name{labels} value [timestamp]``,
``#`` comments, quoted label values that may hold spaces, braces and escaped quotes. A metric that
appears with several label sets (one per worker, say) is summed. Non-finite samples are ignored.

The HTTP connection is kept alive between scrapes (one TCP handshake per agent life, not per tick)
and re-opened after any error; every request has a timeout shorter than the agent's interval.
"""

from __future__ import annotations

import http.client
import math
from collections.abc import Mapping
from urllib.parse import urlsplit

# Wire metric -> scraped series. The testbed backends and the proxy's own naming use the
# ``presage_backend_*`` names; a backend may also expose the ``app_*`` names directly.
DEFAULT_MAPPING: dict[str, str] = {
    "presage_backend_in_flight": "app_in_flight",
    "presage_backend_queue_length": "app_queue_length",
    "presage_backend_workers": "app_workers",
    "app_in_flight": "app_in_flight",
    "app_queue_length": "app_queue_length",
    "app_workers": "app_workers",
}

MAX_BODY_BYTES = 4 << 20  # a metrics page larger than this is not a backend's gauge page


class ScrapeError(RuntimeError):
    """The endpoint could not be read or did not answer 200."""


def _metric_name(line: str) -> tuple[str, str]:
    """Split a sample line into its metric name and the rest (labels, value, timestamp)."""
    for i, ch in enumerate(line):
        if ch == "{" or ch == " " or ch == "\t":
            return line[:i], line[i:]
    return line, ""


def _value_after_labels(rest: str) -> str:
    """The value token of ``{labels} value [ts]`` or `` value [ts]``; quoted braces are skipped."""
    if rest.startswith("{"):
        in_quotes = escaped = False
        for i, ch in enumerate(rest):
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quotes = not in_quotes
            elif ch == "}" and not in_quotes:
                rest = rest[i + 1 :]
                break
        else:
            raise ValueError("unterminated label set")
    parts = rest.split()
    if not parts:
        raise ValueError("no value")
    return parts[0]


def parse_text(text: str, mapping: Mapping[str, str] = DEFAULT_MAPPING) -> dict[str, float]:
    """Sum the samples of every mapped series; returns ``{wire_metric: value}`` for those present."""
    out: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] == "#":
            continue
        name, rest = _metric_name(line)
        target = mapping.get(name)
        if target is None:
            continue
        try:
            value = float(_value_after_labels(rest))
        except ValueError:
            continue  # a malformed line is skipped; the rest of the page still counts
        if math.isfinite(value):
            out[target] = out.get(target, 0.0) + value
    return out


class Scraper:
    """GET one URL over a kept-alive connection and map its gauges to wire metrics."""

    def __init__(self, url: str, *, timeout_s: float, mapping: Mapping[str, str] = DEFAULT_MAPPING) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--scrape: expected an http(s)://HOST[:PORT]/PATH URL, got {url!r}")
        self.url = url
        self.mapping = dict(mapping)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._tls else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout)
        return self._conn

    def fetch(self) -> str:
        conn = self._connection()
        try:
            conn.request("GET", self._path, headers={"Accept": "text/plain"})
            resp = conn.getresponse()
            body = resp.read(MAX_BODY_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise ScrapeError(f"{self.url}: {exc or type(exc).__name__}") from None
        if resp.status != 200 or len(body) > MAX_BODY_BYTES or resp.will_close:
            self.close()  # a closing or oversized answer: start afresh next time
        if resp.status != 200:
            raise ScrapeError(f"{self.url}: HTTP {resp.status}")
        if len(body) > MAX_BODY_BYTES:
            raise ScrapeError(f"{self.url}: body larger than {MAX_BODY_BYTES} bytes")
        return body.decode("utf-8", "replace")

    def read(self) -> dict[str, float]:
        return parse_text(self.fetch(), self.mapping)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
