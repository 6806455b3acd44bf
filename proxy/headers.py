"""Header rewriting between client and backend: hop-by-hop removal, Via and forwarding headers.

Hop-by-hop fields (RFC 9110 section 7.6.1) describe one connection, not the message: ``Connection``
and every field it names, plus ``Proxy-Connection``, ``Keep-Alive``, ``TE``, ``Transfer-Encoding``
and ``Upgrade``; they are dropped in both directions. ``Via`` gets ``<version> presage`` appended
(RFC 9110 section 7.6.3), on requests and responses.

Forwarding headers are trusted only from ``trusted_hops`` proxies in front of Presage (Envoy's
``xff_num_trusted_hops``). With ``trusted_hops = N`` the last N ``X-Forwarded-For`` entries
(those appended by the trusted proxies) are kept and the earlier ones, which any client can
forge, are dropped; the peer address is then appended. ``X-Forwarded-Proto``/``-Host`` are kept
from a trusted peer and otherwise set from the listener's scheme and the ``Host`` header. With the
default ``N = 0`` every incoming forwarding header is replaced. ``Forwarded`` (RFC 7239) follows
the same rule element by element, and gets this hop's element when ``forwarded_header`` is on.

The request side works on the raw ``(name, value)`` byte pairs aiohttp's parser keeps and returns
the header block sent upstream, so a field is never decoded and re-encoded on the way through.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from multidict import CIMultiDict

HOP_BY_HOP: frozenset[bytes] = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"te", b"transfer-encoding", b"upgrade"}
)
HOP_BY_HOP_STR: frozenset[str] = frozenset(h.decode() for h in HOP_BY_HOP)

_FORWARDING: frozenset[bytes] = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"via"}
)
# Fields the request rewrite looks at; every other field is copied through untouched.
_SPECIAL: frozenset[bytes] = HOP_BY_HOP | _FORWARDING | {b"host", b"expect", b"x-request-id"}

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass(frozen=True, slots=True)
class ForwardingPolicy:
    trusted_hops: int = 0
    forwarded_header: bool = False
    pseudonym: str = "presage"


@dataclass(slots=True)
class RewrittenRequest:
    """The upstream header block plus what the data plane needs from the fields it consumed."""

    block: bytes  # "Name: value\r\n" lines, without the final empty line
    host: str | None
    request_id: str | None
    expect_continue: bool
    upgrade: str | None  # lower-cased Upgrade value when Connection names "upgrade"


def connection_tokens(value: str | bytes | None) -> frozenset[str]:
    """Lower-case field names listed in a ``Connection`` header (``close`` and ``keep-alive`` too)."""
    if not value:
        return frozenset()
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    return frozenset(t.strip().lower() for t in text.split(",") if t.strip())


def _list_values(values: Iterable[bytes]) -> list[bytes]:
    return [item.strip() for value in values for item in value.split(b",") if item.strip()]


def forwarded_element(peer: str, proto: str, host: str | None) -> str:
    """One RFC 7239 element; IPv6 nodes are bracketed and quoted (section 6)."""
    node = f'"[{peer}]"' if ":" in peer else _quote(peer)
    parts = [f"for={node}", f"proto={proto}"]
    if host:
        parts.append(f"host={_quote(host)}")
    return ";".join(parts)


def _quote(value: str) -> str:
    if _TOKEN.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rewrite_request(
    raw: Sequence[tuple[bytes, bytes]],
    *,
    peer: str,
    scheme: str,
    version: str,
    policy: ForwardingPolicy,
) -> RewrittenRequest:
    """Build the upstream header block for one request (hot path: one pass over the fields)."""
    lines: list[bytes] = []
    special: dict[bytes, list[bytes]] = {}
    names: list[bytes] = []
    for name, value in raw:
        lname = name.lower()
        if lname in _SPECIAL:
            special.setdefault(lname, []).append(value)
        else:
            names.append(lname)
            lines.append(name + b": " + value + b"\r\n")
    conn = special.get(b"connection")
    listed = connection_tokens(b",".join(conn)) if conn else frozenset()
    if listed:
        lines = [
            line for lname, line in zip(names, lines, strict=True) if lname.decode("latin-1") not in listed
        ]
    host_values = special.get(b"host")
    host = host_values[0].decode("latin-1") if host_values else None
    if host_values:
        lines.insert(0, b"Host: " + host_values[0] + b"\r\n")
    request_id = special.get(b"x-request-id")
    if request_id:
        lines.append(b"X-Request-Id: " + request_id[0] + b"\r\n")
    _forwarding(lines, special, peer, scheme, host, policy)
    via = special.get(b"via", [])
    via.append(f"{version} {policy.pseudonym}".encode())
    lines.append(b"Via: " + b", ".join(via) + b"\r\n")
    expect = special.get(b"expect")
    upgrade = special.get(b"upgrade") if "upgrade" in listed else None
    return RewrittenRequest(
        block=b"".join(lines),
        host=host,
        request_id=request_id[0].decode("latin-1") if request_id else None,
        expect_continue=expect is not None and expect[0].strip().lower() == b"100-continue",
        upgrade=upgrade[0].decode("latin-1").strip().lower() if upgrade else None,
    )


def _forwarding(
    lines: list[bytes],
    special: dict[bytes, list[bytes]],
    peer: str,
    scheme: str,
    host: str | None,
    policy: ForwardingPolicy,
) -> None:
    hops = policy.trusted_hops
    xff = _list_values(special.get(b"x-forwarded-for", ()))[-hops:] if hops else []
    xff.append(peer.encode())
    lines.append(b"X-Forwarded-For: " + b", ".join(xff) + b"\r\n")
    proto = special.get(b"x-forwarded-proto") if hops else None
    lines.append(b"X-Forwarded-Proto: " + (proto[0] if proto else scheme.encode()) + b"\r\n")
    fwd_host = special.get(b"x-forwarded-host") if hops else None
    if fwd_host:
        lines.append(b"X-Forwarded-Host: " + fwd_host[0] + b"\r\n")
    elif host:
        lines.append(b"X-Forwarded-Host: " + host.encode("latin-1") + b"\r\n")
    elements = _list_values(special.get(b"forwarded", ()))[-hops:] if hops else []
    if policy.forwarded_header:
        elements.append(forwarded_element(peer, scheme, host).encode("latin-1"))
    if elements:
        lines.append(b"Forwarded: " + b", ".join(elements) + b"\r\n")


def _decode(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def response_headers(
    fields: Sequence[tuple[bytes, bytes]], via: str, *, drop_length: bool
) -> CIMultiDict[str]:
    """Upstream response fields minus hop-by-hop ones, with ``Via`` appended.

    ``drop_length`` removes ``Content-Length`` from a chunked response (RFC 9112 section 6.3:
    ``Transfer-Encoding`` overrides it, and the proxy re-frames the body).
    """
    out: CIMultiDict[str] = CIMultiDict()
    drop = HOP_BY_HOP
    conn = [v for n, v in fields if n.lower() == b"connection"]
    if conn:
        drop = HOP_BY_HOP | {t.encode("latin-1") for t in connection_tokens(b",".join(conn))}
    vias: list[str] = []
    for name, value in fields:
        lname = name.lower()
        if lname in drop or (drop_length and lname == b"content-length"):
            continue
        if lname == b"via":
            vias.append(_decode(value))
            continue
        out.add(name.decode("ascii"), _decode(value))
    vias.append(via)
    out["Via"] = ", ".join(vias)
    return out


def raw_response_block(fields: Sequence[tuple[bytes, bytes]]) -> bytes:
    """Upstream response fields minus hop-by-hop ones, as CRLF-separated raw lines."""
    conn = [v for n, v in fields if n.lower() == b"connection"]
    drop = HOP_BY_HOP
    if conn:
        drop = HOP_BY_HOP | {t.encode("latin-1") for t in connection_tokens(b",".join(conn))}
    return b"\r\n".join(n + b": " + v for n, v in fields if n.lower() not in drop)


def str_request_headers(block: bytes) -> list[tuple[str, str]]:
    """A rewritten header block as ``str`` pairs, for aiohttp's client (WebSocket upgrades)."""
    pairs: list[tuple[str, str]] = []
    for line in block.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b": ")
            pairs.append((name.decode("latin-1"), _decode(value)))
    return pairs
