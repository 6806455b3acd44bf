"""Open-loop HTTP load generator: every request leaves at its scheduled time, whatever the server does.

A closed-loop client (N users, each waiting for its answer) sends less when the server slows down,
so it hides exactly the overload a balancer must handle — "coordinated omission" (Tene, wrk2;
Schroeder, Wierman & Harchol-Balter, "Open versus closed: a cautionary tale", NSDI 2006). Here
the send times come from a schedule (``loadtest.traces.poisson_arrivals``) and a slow answer never
delays a later send: a request that finds no idle keep-alive connection gets a new one. The only
limit is ``max_in_flight``; a request that would exceed it is *dropped* and counted as such,
never queued out of sight.

Timing. ``rtt_s`` runs from the moment the request is handed to the socket layer (a new
connection's set-up is part of it) to the last byte of the response. Sends are never held back by
the server, so the only gap between the schedule and the send is the generator's own timer
tick and CPU; it is kept per request as ``lag_s`` rather than charged to the server, and the
summary reports it so that a run whose generator fell behind is visible (``lag_p99_s``).

The client is raw asyncio protocols (on uvloop from the CLI), as in ``loadtest.dataplane_load``,
so that on a 2-core machine it takes little CPU away from the system under test; it parses
``Content-Length``, chunked and close-delimited responses and reads the ``X-Presage-Backend``
header that says which backend served the request.

CLI: ``python -m loadtest.loadgen URL --trace dynamic --low 50 --high 200 --duration 30 --seed 1
--json out/loadgen.json`` prints a summary table and writes the summary as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import math
import resource
import ssl
import sys
import time
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import orjson

from loadtest.traces import DEFAULT_SIZE_MIX, TRACE_KINDS, draw_sizes, make_trace, parse_mix, poisson_arrivals

BACKEND_HEADER = b"x-presage-backend"
_NO_BODY = -2  # parser states for the body, besides a byte count
_CHUNKED = -3
_UNTIL_CLOSE = -4


class _Conn(asyncio.Protocol):
    """One keep-alive connection carrying at most one request at a time (no pipelining)."""

    def __init__(self, gen: _OpenLoop) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idx = -1  # the request in flight, -1 when idle
        self.pending: bytes | None = None  # written once the connection is up
        self.sent_at = 0.0
        self.last_used = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.buf = bytearray()
        self._reset_response()

    def _reset_response(self) -> None:
        self.status = 0
        self.backend = ""
        self.keep_alive = True
        self.body = -1  # -1: head not read yet; >= 0: body bytes still expected

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)
        if self.closed:  # the request timed out while we were connecting
            self.transport.abort()
        elif self.pending is not None:
            self.transport.write(self.pending)
            self.pending = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.idx >= 0:
            if self.body == _UNTIL_CLOSE:  # a close-delimited body ends with the connection
                self.gen.complete(self)
            else:
                self.gen.fail(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.idx < 0:  # bytes nobody asked for: the connection is no longer usable
            self.close()
            return
        try:
            done = self._parse()
        except ValueError:
            self.gen.fail(self)
            self.close()
            return
        if done:
            self.gen.complete(self)

    # -- requests ---------------------------------------------------------------------------------
    def start(self, idx: int, request: bytes, now: float, timeout_s: float) -> None:
        self.idx = idx
        self.sent_at = now
        self.timer = self.gen.loop.call_later(timeout_s, self._on_timeout)
        if self.transport is None:
            self.pending = request
        else:
            self.transport.write(request)

    def finish(self) -> None:
        self.idx = -1
        self.pending = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._reset_response()

    def _on_timeout(self) -> None:
        self.timer = None
        if self.idx >= 0:
            self.gen.fail(self)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- HTTP/1.1 response parsing (RFC 9112 section 6: framing) -----------------------------------
    def _parse(self) -> bool:
        """Consume what is buffered; True once the whole response is in."""
        while self.body == -1:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            head = bytes(self.buf[:end])
            del self.buf[: end + 4]
            self._read_head(head)
        if self.body == _UNTIL_CLOSE:
            self.buf.clear()
            return False
        if self.body == _CHUNKED:
            return self._parse_chunks()
        if len(self.buf) < self.body:
            return False
        del self.buf[: self.body]
        return True

    def _read_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status_line = lines[0]
        if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12:
            raise ValueError("bad status line")
        status = int(status_line[9:12])
        if 100 <= status < 200:  # interim response: the real one follows
            return
        self.status = status
        self.keep_alive = status_line[7:8] == b"1"
        length = -1
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                self.keep_alive = self.keep_alive and b"close" not in value.lower()
            elif name == BACKEND_HEADER:
                self.backend = value.strip().decode("latin-1")
        if status in (204, 304):
            self.body = 0
        elif chunked:
            self.body = _CHUNKED
        elif length >= 0:
            self.body = length
        else:
            self.body = _UNTIL_CLOSE
            self.keep_alive = False

    def _parse_chunks(self) -> bool:
        while True:
            eol = self.buf.find(b"\r\n")
            if eol < 0:
                return False
            size = int(bytes(self.buf[:eol]).split(b";", 1)[0], 16)
            if size == 0:  # last chunk, then optional trailers, then an empty line
                end = self.buf.find(b"\r\n\r\n", eol)
                if end < 0:
                    return False
                del self.buf[: end + 4]
                return True
            if len(self.buf) < eol + 2 + size + 2:
                return False
            del self.buf[: eol + 2 + size + 2]


@dataclass(frozen=True)
class _Target:
    host: str
    port: int
    ssl: ssl.SSLContext | None
    authority: str
    base_path: str


def _parse_url(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url must be http://HOST[:PORT][/PREFIX] or https://..., got {url!r}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    return _Target(
        parts.hostname,
        port,
        ssl.create_default_context() if tls else None,
        parts.netloc,
        parts.path.rstrip("/"),
    )


def _size_text(size: float) -> str:
    return str(int(size)) if float(size).is_integer() else repr(float(size))


def build_request(target_host: str, path: str, size_param: str, class_header: str, size: float) -> bytes:
    """The bytes of one GET carrying the size as ``?size_param=`` and as the class header."""
    text = _size_text(size)
    sep = "&" if "?" in path else "?"
    return (
        f"GET {path}{sep}{size_param}={text} HTTP/1.1\r\nHost: {target_host}\r\n"
        f"User-Agent: presage-loadgen\r\n{class_header}: {text}\r\n\r\n"
    ).encode("latin-1")


@dataclass(frozen=True, eq=False)
class LoadResult:
    """Per-request outcome of one run, index-aligned with the schedule."""

    scheduled_s: np.ndarray  # float64 send offset from the start of the schedule
    rtt_s: np.ndarray  # float64, NaN when there was no complete response (error, timeout, dropped)
    status: np.ndarray  # int32 HTTP status; 0 on a transport error or when dropped
    backend: np.ndarray  # str, the X-Presage-Backend header ("" when absent)
    dropped: np.ndarray  # bool, not sent because max_in_flight requests were already out
    lag_s: np.ndarray  # float64 actual send - scheduled send (NaN when dropped)
    sizes: np.ndarray
    duration_s: float  # length of the schedule (the trace), the denominator of the rates

    @property
    def ok(self) -> np.ndarray:
        return (self.status >= 200) & (self.status < 400)

    def summary(self, slo_p95_s: float, window_s: float = 10.0) -> dict[str, Any]:
        """Totals, RTT percentiles over successful requests, and a per-window timeline.

        Percentiles are nearest-rank (numpy ``inverted_cdf``). In a window, a request without a
        successful answer (error, timeout, drop) counts as infinitely slow, so a window where more
        than 5 % fail breaks a p95 SLO whatever the survivors' latency; windows with no scheduled
        request are left out of ``slo_breach_share``.
        """
        if not (math.isfinite(slo_p95_s) and slo_p95_s > 0):
            raise ValueError(f"slo_p95_s must be > 0 seconds, got {slo_p95_s!r}")
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s must be > 0 seconds, got {window_s!r}")
        ok = self.ok
        count = int(self.scheduled_s.shape[0])
        dropped = int(self.dropped.sum())
        good = self.rtt_s[ok]
        lag = self.lag_s[~self.dropped]
        windows = self._windows(slo_p95_s, window_s)
        judged = [w for w in windows if w["count"] > 0]
        backends = sorted({b for b in self.backend.tolist() if b})
        served = self.backend[self.backend != ""]
        return {
            "count": count,
            "sent": count - dropped,
            "ok": int(ok.sum()),
            "errors": count - dropped - int(ok.sum()),
            "transport_errors": int(((self.status == 0) & ~self.dropped).sum()),
            "dropped": dropped,
            "duration_s": self.duration_s,
            "offered_rps": count / self.duration_s,
            "achieved_rps": int(ok.sum()) / self.duration_s,
            "mean_s": float(good.mean()) if good.size else None,
            "p50_s": _quantile(good, 0.50),
            "p95_s": _quantile(good, 0.95),
            "p99_s": _quantile(good, 0.99),
            "max_s": float(good.max()) if good.size else None,
            "lag_p50_s": _quantile(lag, 0.50),
            "lag_p99_s": _quantile(lag, 0.99),
            "lag_max_s": float(lag.max()) if lag.size else None,
            "slo_p95_s": slo_p95_s,
            "window_s": window_s,
            "slo_breach_share": (sum(w["breach"] for w in judged) / len(judged)) if judged else None,
            "backends": backends,
            "backend_share": {b: float((served == b).sum() / served.size) for b in backends},
            "windows": windows,
        }

    def _windows(self, slo_p95_s: float, window_s: float) -> list[dict[str, Any]]:
        n_windows = max(1, math.ceil(self.duration_s / window_s - 1e-9))
        which = np.minimum((self.scheduled_s // window_s).astype(np.int64), n_windows - 1)
        latency = np.where(self.ok, self.rtt_s, np.inf)
        out = []
        for k in range(n_windows):
            sel = which == k
            lat = latency[sel]
            p95 = float(np.quantile(lat, 0.95, method="inverted_cdf")) if lat.size else None
            names = self.backend[sel]
            names = names[names != ""]
            share = {
                str(b): float(c / names.size)
                for b, c in zip(*np.unique(names, return_counts=True), strict=True)
            }
            out.append(
                {
                    "start_s": k * window_s,
                    "count": int(sel.sum()),
                    "ok": int((sel & self.ok).sum()),
                    "dropped": int((sel & self.dropped).sum()),
                    "p95_s": None if p95 is None or math.isinf(p95) else p95,
                    "breach": bool(p95 is not None and p95 > slo_p95_s),
                    "share": share,
                }
            )
        return out

    def to_dict(self) -> dict[str, list[Any]]:
        """Per-request arrays as JSON-ready lists (NaN becomes None)."""
        return {
            "scheduled_s": self.scheduled_s.tolist(),
            "rtt_s": [None if math.isnan(x) else x for x in self.rtt_s.tolist()],
            "status": self.status.tolist(),
            "backend": self.backend.tolist(),
            "dropped": self.dropped.tolist(),
            "lag_s": [None if math.isnan(x) else x for x in self.lag_s.tolist()],
            "sizes": self.sizes.tolist(),
        }


def _quantile(x: np.ndarray, q: float) -> float | None:
    return float(np.quantile(x, q, method="inverted_cdf")) if x.size else None


class _OpenLoop:
    """The state of one run: the schedule, the connection pool, and the per-request outcomes."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        target: _Target,
        requests: list[bytes],
        n: int,
        timeout_s: float,
        max_in_flight: int,
        idle_timeout_s: float,
    ) -> None:
        self.loop = loop
        self.target = target
        self.requests = requests  # one per request index (shared bytes for equal sizes)
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self.idle_timeout_s = idle_timeout_s
        self.idle: collections.deque[_Conn] = collections.deque()
        self.all: set[_Conn] = set()
        self.connecting: set[asyncio.Task[None]] = set()
        self.in_flight = 0
        self.drained = asyncio.Event()
        self.rtt = [math.nan] * n
        self.status = [0] * n
        self.backend = [""] * n
        self.lag = [math.nan] * n
        self.dropped = [False] * n

    async def open(self, count: int) -> None:
        """Open ``count`` idle connections up front, so the first burst does not pay for set-up;
        give up on those not up within ``timeout_s`` (a black-holed address must not hang the run)."""
        conns = [self._new_conn() for _ in range(count)]
        tasks = [self.loop.create_task(self._connect(c)) for c in conns]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.timeout_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        now = time.perf_counter()
        for conn in conns:
            if conn.transport is not None and not conn.closed:
                conn.last_used = now
                self.idle.append(conn)

    def _new_conn(self) -> _Conn:
        conn = _Conn(self)
        self.all.add(conn)
        return conn

    async def _connect(self, conn: _Conn) -> None:
        t = self.target
        try:
            await self.loop.create_connection(lambda: conn, t.host, t.port, ssl=t.ssl)
        except OSError:
            conn.closed = True
            if conn.idx >= 0:
                self.fail(conn)

    def dispatch(self, idx: int, scheduled_at: float) -> None:
        if self.in_flight >= self.max_in_flight:
            self.dropped[idx] = True
            return
        self.in_flight += 1
        now = time.perf_counter()
        self.lag[idx] = now - scheduled_at
        conn = self._take_idle()
        if conn is not None:
            conn.start(idx, self.requests[idx], now, self.timeout_s)
            return
        conn = self._new_conn()
        conn.start(idx, self.requests[idx], now, self.timeout_s)
        task = self.loop.create_task(self._connect(conn))
        self.connecting.add(task)
        task.add_done_callback(self.connecting.discard)

    def _take_idle(self) -> _Conn | None:
        # Most recently used first: the pool's cold end ages out in ``trim_idle``, before a
        # server's keep-alive timer can close it under a request.
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
        return None

    def trim_idle(self, now: float) -> None:
        while self.idle and (self.idle[0].closed or now - self.idle[0].last_used > self.idle_timeout_s):
            conn = self.idle.popleft()
            conn.close()
            self.all.discard(conn)

    def complete(self, conn: _Conn) -> None:
        now = time.perf_counter()
        idx = conn.idx
        self.rtt[idx] = now - conn.sent_at
        self.status[idx] = conn.status
        self.backend[idx] = conn.backend
        keep = conn.keep_alive and not conn.closed
        conn.finish()
        if keep:
            conn.last_used = now
            self.idle.append(conn)
        else:
            conn.close()
            self.all.discard(conn)
        self._done_one()

    def fail(self, conn: _Conn) -> None:
        # status stays 0 and rtt NaN: a transport error (refused, reset, timeout, bad framing)
        conn.finish()
        conn.close()
        self.all.discard(conn)
        self._done_one()

    def _done_one(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.drained.set()

    def close(self) -> None:
        for task in list(self.connecting):
            task.cancel()
        for conn in list(self.all):
            conn.finish()
            conn.close()
        self.all.clear()
        self.idle.clear()


def _ensure_fd_budget(need: int) -> None:
    """Every in-flight request may hold its own socket; raise the soft fd limit if it is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < need:
            raise ValueError(f"max_in_flight needs about {need} open files but the limit is {soft}")


async def run_open_loop(
    url: str,
    arrivals: np.ndarray,
    *,
    sizes: np.ndarray,
    path: str = "/work",
    size_param: str = "size",
    class_header: str = "X-Presage-Class",
    timeout_s: float = 10.0,
    max_in_flight: int = 2000,
    connections: int = 64,
    duration_s: float | None = None,
    idle_timeout_s: float = 2.0,
) -> LoadResult:
    """Send request ``i`` at ``arrivals[i]`` seconds after the start, sized ``sizes[i]``; wait for
    the answers (each bounded by ``timeout_s``) and return every request's outcome.

    ``connections`` keep-alive connections are opened before the clock starts; more are opened on
    demand, up to one per request in flight. ``duration_s`` (default: the last arrival) is the
    schedule's length, the denominator of the offered and achieved rates.
    """
    scheduled = np.asarray(arrivals, dtype=float)
    size_arr = np.asarray(sizes)
    _check_run_args(scheduled, size_arr, timeout_s, max_in_flight, connections)
    target = _parse_url(url)
    _ensure_fd_budget(max_in_flight + connections + 64)
    full_path = target.base_path + (path if path.startswith("/") else "/" + path)
    uniq, inverse = np.unique(size_arr, return_inverse=True)
    built = [build_request(target.authority, full_path, size_param, class_header, s) for s in uniq.tolist()]
    requests = [built[k] for k in inverse.tolist()]
    gen = _OpenLoop(
        asyncio.get_running_loop(), target, requests, len(requests), timeout_s, max_in_flight, idle_timeout_s
    )
    try:
        await gen.open(min(connections, max_in_flight))
        await _schedule(gen, scheduled.tolist())
        if gen.in_flight:
            gen.drained.clear()
            await asyncio.wait_for(gen.drained.wait(), timeout_s + 5.0)
    finally:
        gen.close()
    span = (
        float(duration_s) if duration_s is not None else (float(scheduled.max()) if scheduled.size else 0.0)
    )
    return LoadResult(
        scheduled_s=scheduled,
        rtt_s=np.array(gen.rtt, dtype=float),
        status=np.array(gen.status, dtype=np.int32),
        backend=np.array(gen.backend, dtype=str),
        dropped=np.array(gen.dropped, dtype=bool),
        lag_s=np.array(gen.lag, dtype=float),
        sizes=size_arr,
        duration_s=max(span, 1e-9),
    )


def _check_run_args(
    scheduled: np.ndarray, sizes: np.ndarray, timeout_s: float, max_in_flight: int, connections: int
) -> None:
    if scheduled.ndim != 1 or (
        scheduled.size and (not np.all(np.isfinite(scheduled)) or scheduled.min() < 0)
    ):
        raise ValueError("arrivals must be a 1-d array of finite offsets >= 0 seconds")
    if scheduled.size > 1 and np.any(np.diff(scheduled) < 0):
        raise ValueError("arrivals must be sorted")
    if sizes.shape != scheduled.shape:
        raise ValueError(
            f"sizes has shape {sizes.shape}, arrivals {scheduled.shape}: need one size per request"
        )
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight!r}")
    if connections < 0:
        raise ValueError(f"connections must be >= 0, got {connections!r}")


async def _schedule(gen: _OpenLoop, offsets: list[float]) -> None:
    """Dispatch each request once its offset has passed; sleep until the next one is due."""
    clock = time.perf_counter
    start = clock()
    i, n = 0, len(offsets)
    next_trim = start + 0.1
    while i < n:
        now = clock()
        elapsed = now - start
        while i < n and offsets[i] <= elapsed:
            gen.dispatch(i, start + offsets[i])
            i += 1
        if now >= next_trim:
            gen.trim_idle(now)
            next_trim = now + 0.1
        if i < n:
            await asyncio.sleep(max(0.0, offsets[i] - (clock() - start)))


# -- CLI -------------------------------------------------------------------------------------------


def _table(summary: dict[str, Any]) -> str:
    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x * 1000:.1f}"

    rows = [
        ("requests", str(summary["count"])),
        ("ok / errors / dropped", f"{summary['ok']} / {summary['errors']} / {summary['dropped']}"),
        ("offered / achieved rps", f"{summary['offered_rps']:.1f} / {summary['achieved_rps']:.1f}"),
        (
            "mean / p50 / p95 / p99 ms",
            " / ".join(ms(summary[k]) for k in ("mean_s", "p50_s", "p95_s", "p99_s")),
        ),
        (
            "send lag p50 / p99 / max ms",
            " / ".join(ms(summary[k]) for k in ("lag_p50_s", "lag_p99_s", "lag_max_s")),
        ),
        (f"windows breaking p95 <= {summary['slo_p95_s'] * 1000:.0f} ms", f"{summary['slo_breach_share']}"),
        ("backend share", ", ".join(f"{b}={s:.2f}" for b, s in summary["backend_share"].items()) or "-"),
    ]
    if "generator_cpu_s" in summary:
        cpu = summary["generator_cpu_s"]
        rows.append(("generator CPU", f"{cpu:.2f} s ({100 * cpu / summary['duration_s']:.0f} % of one core)"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.loadgen", description=__doc__.split("\n", 1)[0])
    p.add_argument("url", help="base URL of the system under test, e.g. http://127.0.0.1:8080")
    p.add_argument("--trace", choices=TRACE_KINDS, default="constant")
    p.add_argument("--low", type=float, default=50.0, help="low rate, req/s")
    p.add_argument("--high", type=float, default=200.0, help="high rate, req/s")
    p.add_argument("--period", type=float, default=10.0, help="dynamic trace: seconds per level")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of schedule")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--mix", default=",".join(f"{k}:{v}" for k, v in DEFAULT_SIZE_MIX.items()), help="SIZE:W,..."
    )
    p.add_argument("--path", default="/work")
    p.add_argument("--size-param", default="size")
    p.add_argument("--class-header", default="X-Presage-Class")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, s")
    p.add_argument("--max-in-flight", type=int, default=2000)
    p.add_argument("--connections", type=int, default=64, help="keep-alive connections opened up front")
    p.add_argument("--slo", type=float, default=0.5, help="p95 SLO in seconds, judged per window")
    p.add_argument("--window", type=float, default=10.0, help="SLO window, s")
    p.add_argument("--json", default="out/loadgen.json", help="where to write the summary")
    p.add_argument("--per-request", action="store_true", help="also write every request's outcome")
    return p


async def _run_cli(args: argparse.Namespace) -> tuple[LoadResult, float]:
    trace = make_trace(args.trace, args.low, args.high, args.period, args.duration, args.seed)
    arrivals = poisson_arrivals(trace, args.seed)
    sizes = draw_sizes(arrivals.shape[0], parse_mix(args.mix), args.seed)
    cpu0 = time.process_time()
    result = await run_open_loop(
        args.url,
        arrivals,
        sizes=sizes,
        path=args.path,
        size_param=args.size_param,
        class_header=args.class_header,
        timeout_s=args.timeout,
        max_in_flight=args.max_in_flight,
        connections=args.connections,
        duration_s=args.duration,
    )
    return result, time.process_time() - cpu0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    try:
        result, cpu_s = asyncio.run(_run_cli(args))
        summary = result.summary(args.slo, args.window)
    except ValueError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    summary["generator_cpu_s"] = cpu_s
    print(_table(summary))
    doc: dict[str, Any] = {"config": vars(args), "summary": summary}
    if args.per_request:
        doc["requests"] = result.to_dict()
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
