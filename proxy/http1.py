"""An incremental HTTP/1.1 response parser for upstream connections (RFC 9112).

The parser is fed bytes as they arrive and reports through three callbacks: ``on_head`` once the
status line and fields are complete, ``on_body`` for each piece of decoded body, ``on_done`` when
the message ends. Message framing follows RFC 9112 section 6.3, in order:

1. responses to HEAD, and 1xx/204/304 responses, have no body (1xx other than 101 are skipped:
   the final response follows them on the same connection);
2. ``Transfer-Encoding`` whose last coding is ``chunked``: chunked (any ``Content-Length`` is
   ignored); any other ``Transfer-Encoding``: the body runs to connection close;
3. ``Content-Length``: exactly that many bytes; several differing values, or a non-decimal
   value, make the response invalid (RFC 9112 section 6.3 item 5: never guess a length);
4. otherwise the body runs to connection close.

Anything that does not parse raises ``ProtocolError``: the connection is then unusable and the
proxy answers 502. Limits keep a broken or hostile backend from growing memory without bound.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

MAX_HEAD_BYTES = 64 * 1024
MAX_FIELDS = 256
MAX_CHUNK_LINE = 4096

_HEX = frozenset(b"0123456789abcdefABCDEF")

# parser states
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILER, _EOF, _DONE = range(8)


class ProtocolError(Exception):
    """The upstream response is not valid HTTP/1.1."""


@dataclass(slots=True)
class ResponseHead:
    version: bytes  # b"1.1" or b"1.0"
    status: int
    status_text: bytes  # the status line after the version, e.g. b"200 OK"
    block: bytes  # the field lines as received, CRLF-separated, without the final CRLF
    length: int  # Content-Length, or -1 when chunked or read to close, 0 when bodiless
    chunked: bool
    keep_alive: bool
    plain: bool  # no hop-by-hop field and no Via: ``block`` can be forwarded as it is

    @property
    def fields(self) -> list[tuple[bytes, bytes]]:
        """(name, value) pairs in order, names as received (split on demand: rarely needed)."""
        if not self.block:
            return []
        pairs = (line.partition(b":") for line in self.block.split(b"\r\n"))
        return [(name, value.strip(b" \t")) for name, _, value in pairs]

    @property
    def reason(self) -> str:
        return self.status_text[4:].decode("latin-1")

    @property
    def to_close(self) -> bool:
        """True when the body is delimited by the connection closing."""
        return self.length < 0 and not self.chunked


# The field block, validated in one regex pass: lines of a token, a colon, then no CR, LF or NUL
# (RFC 9112 section 5; obs-fold and whitespace before the colon are rejected).
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_FIELD_BLOCK = re.compile(rb"%s:[^\r\n\x00]*(?:\r\n%s:[^\r\n\x00]*)*" % (_TOKEN, _TOKEN))
# The fields that change framing or are hop-by-hop. They are looked up as "\r\n<name>:" in the
# lower-cased block: a few substring searches instead of splitting every line (the block is valid).
_SPECIAL_NAMES = (
    b"content-length", b"transfer-encoding", b"connection", b"via", b"keep-alive", b"proxy-connection",
    b"te", b"upgrade", b"trailer",
)  # fmt: skip
_NEEDLES = tuple((name, b"\r\n" + name + b":") for name in _SPECIAL_NAMES)


def _special_fields(block: bytes) -> dict[bytes, list[bytes]]:
    low = b"\r\n" + block.lower()
    found: dict[bytes, list[bytes]] = {}
    for name, needle in _NEEDLES:
        at = low.find(needle)
        while at >= 0:
            start = at + len(needle)
            end = low.find(b"\r\n", start)
            end = len(low) if end < 0 else end
            found.setdefault(name, []).append(low[start:end].strip(b" \t"))
            at = low.find(needle, end)
    return found


def _tokens(values: list[bytes]) -> list[bytes]:
    return [t.strip() for v in values for t in v.split(b",") if t.strip()]


def parse_head(raw: bytes, head_request: bool) -> ResponseHead:
    """Parse a status line and field block (without the final empty line)."""
    status_line, _, block = raw.partition(b"\r\n")
    version, status, status_text = _status_line(status_line)
    special: dict[bytes, list[bytes]] = {}
    if block:
        if _FIELD_BLOCK.fullmatch(block) is None:
            raise ProtocolError(f"bad header field in {block[:120]!r}")
        if block.count(b"\r\n") >= MAX_FIELDS:
            raise ProtocolError("too many header fields")
        special = _special_fields(block)
    keep_alive = version == b"1.1" and b"close" not in _tokens(special.get(b"connection", []))
    plain = not special or special.keys() == {b"content-length"}
    if head_request or status < 200 or status in (204, 304):
        return ResponseHead(version, status, status_text, block, 0, False, keep_alive, plain)
    codings = _tokens(special.get(b"transfer-encoding", []))
    if codings:  # RFC 9112 6.3: Transfer-Encoding overrides Content-Length
        chunked = codings[-1] == b"chunked"
        return ResponseHead(version, status, status_text, block, -1, chunked, keep_alive and chunked, False)
    length = _content_length(special.get(b"content-length"))
    return ResponseHead(version, status, status_text, block, length, False, keep_alive and length >= 0, plain)


def _status_line(line: bytes) -> tuple[bytes, int, bytes]:
    if line[:7] != b"HTTP/1." or line[7:8] not in (b"0", b"1") or line[8:9] != b" ":
        raise ProtocolError(f"bad status line {line[:80]!r}")
    text = line[9:]
    code = text[:3]
    if not code.isdigit() or code[0] == 0x30 or text[3:4] not in (b"", b" "):
        raise ProtocolError(f"bad status line {line[:80]!r}")
    return line[5:8], int(code), text if len(text) > 3 else text + b" "


def _content_length(values: list[bytes] | None) -> int:
    """-1 when absent; several differing or non-decimal values are an error (RFC 9112 6.3 item 5)."""
    if not values:
        return -1
    distinct = {v.strip() for value in values for v in value.split(b",")}
    if len(distinct) > 1:
        raise ProtocolError("conflicting Content-Length values")
    value = distinct.pop()
    if not value.isdigit() or len(value) > 18:
        raise ProtocolError(f"bad Content-Length {value[:20]!r}")
    return int(value)


class ResponseParser:
    """Feeds one response at a time; ``start`` arms it for the next request's response."""

    __slots__ = (
        "_buf",
        "_head_request",
        "_remaining",
        "_state",
        "head",
        "on_body",
        "on_done",
        "on_head",
    )

    def __init__(
        self,
        on_head: Callable[[ResponseHead], None],
        on_body: Callable[[bytes], None],
        on_done: Callable[[], None],
    ) -> None:
        self.on_head = on_head
        self.on_body = on_body
        self.on_done = on_done
        self._buf = bytearray()
        self._state = _DONE
        self._remaining = 0
        self._head_request = False
        self.head: ResponseHead | None = None

    @property
    def done(self) -> bool:
        return self._state == _DONE

    @property
    def leftover(self) -> bool:
        """Bytes after the end of the last message: the connection cannot be reused."""
        return bool(self._buf)

    def start(self, head_request: bool) -> None:
        self._state = _HEAD
        self._head_request = head_request
        self.head = None

    def feed(self, data: bytes) -> None:
        if not self._buf:  # the common cases, without copying into the buffer
            if self._state == _HEAD:
                data = self._feed_head(data)
            if self._state == _LENGTH and data:
                data = self._feed_length(data)
            if not data:
                return
        self._buf += data
        while self._buf and self._state != _DONE:
            if not self._step():
                return

    def feed_eof(self) -> None:
        """The connection closed; completes a read-to-close body, else the response is cut."""
        if self._state == _EOF:
            self._finish()
        elif self._state != _DONE:
            raise ProtocolError("connection closed before the response was complete")

    def _feed_head(self, data: bytes) -> bytes:
        """A whole head at the start of ``data``: parse it in place and return the rest."""
        end = data.find(b"\r\n\r\n")
        if end < 0 or end > MAX_HEAD_BYTES:
            return data  # partial (or oversized): the buffered path handles and limits it
        self._head_parsed(parse_head(data[:end], self._head_request))
        return data[end + 4 :]

    def _feed_length(self, data: bytes) -> bytes:
        take = min(self._remaining, len(data))
        self._remaining -= take
        self.on_body(data if take == len(data) else data[:take])
        if self._remaining == 0:
            self._finish()
        return data[take:]

    def _step(self) -> bool:
        state = self._state
        if state == _HEAD:
            return self._step_head()
        if state == _LENGTH:
            rest = self._feed_length(bytes(self._buf))
            self._buf = bytearray(rest)
            return True
        if state == _EOF:
            self.on_body(bytes(self._buf))
            self._buf.clear()
            return False
        return self._step_chunked(state)

    def _step_head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD_BYTES:
                raise ProtocolError("response head too large")
            return False
        if end > MAX_HEAD_BYTES:
            raise ProtocolError("response head too large")
        head = parse_head(bytes(self._buf[:end]), self._head_request)
        del self._buf[: end + 4]
        self._head_parsed(head)
        return True

    def _head_parsed(self, head: ResponseHead) -> None:
        if 100 <= head.status < 200 and head.status != 101:
            return  # interim response (e.g. 103 Early Hints): the final one follows
        self.head = head
        self.on_head(head)
        if head.chunked:
            self._state = _CHUNK_SIZE
        elif head.length > 0:
            self._state, self._remaining = _LENGTH, head.length
        elif head.length < 0:
            self._state = _EOF
        else:
            self._finish()

    def _step_chunked(self, state: int) -> bool:
        if state == _CHUNK_DATA:
            take = min(self._remaining, len(self._buf))
            self.on_body(bytes(self._buf[:take]))
            del self._buf[:take]
            self._remaining -= take
            if self._remaining == 0:
                self._state = _CHUNK_CRLF
            return True
        line = self._line()
        if line is None:
            return False
        if state == _CHUNK_SIZE:
            self._chunk_size(line)
        elif state == _CHUNK_CRLF:
            if line:
                raise ProtocolError("missing CRLF after chunk data")
            self._state = _CHUNK_SIZE
        elif not line:  # _TRAILER: an empty line ends the trailer section (trailers are dropped)
            self._finish()
        return True

    def _line(self) -> bytes | None:
        end = self._buf.find(b"\r\n")
        if end < 0:
            if len(self._buf) > MAX_CHUNK_LINE:
                raise ProtocolError("chunk line too long")
            return None
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line

    def _chunk_size(self, line: bytes) -> None:
        size = line.split(b";", 1)[0].strip(b" \t")
        if not size or len(size) > 15 or not _HEX.issuperset(size):
            raise ProtocolError(f"bad chunk size {line[:40]!r}")
        self._remaining = int(size, 16)
        self._state = _CHUNK_DATA if self._remaining else _TRAILER

    def _finish(self) -> None:
        self._state = _DONE
        self.on_done()
