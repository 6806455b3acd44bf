"""The upstream response parser (RFC 9112 framing), fed byte by byte and in one piece."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.http1 import ProtocolError, ResponseHead, ResponseParser, parse_head


class Collector:
    def __init__(self, head_request: bool = False) -> None:
        self.heads: list[ResponseHead] = []
        self.body = b""
        self.done = 0
        self.parser = ResponseParser(self.heads.append, self._body, self._done)
        self.parser.start(head_request)

    def _body(self, data: bytes) -> None:
        self.body += data

    def _done(self) -> None:
        self.done += 1


def feed(data: bytes, *, split: int = 0, head_request: bool = False, eof: bool = False) -> Collector:
    c = Collector(head_request)
    if split:
        for i in range(0, len(data), split):
            c.parser.feed(data[i : i + split])
    else:
        c.parser.feed(data)
    if eof:
        c.parser.feed_eof()
    return c


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 999\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
)


@pytest.mark.parametrize("split", [0, 1, 3, 7])
def test_chunked_body_is_decoded_whatever_the_packet_boundaries(split: int) -> None:
    c = feed(CHUNKED, split=split)
    assert c.body == b"hello world"
    assert c.done == 1
    head = c.heads[0]
    assert head.chunked and head.length == -1 and head.keep_alive and not head.plain
    assert not c.parser.leftover


def test_content_length_body_and_leftover_detection() -> None:
    c = feed(b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\nX: y\r\n\r\nabcEXTRA")
    assert (c.heads[0].status, c.heads[0].status_text, c.body) == (201, b"201 Created", b"abc")
    assert c.heads[0].plain and c.heads[0].block == b"Content-Length: 3\r\nX: y"
    assert c.parser.leftover  # bytes after the message: the connection must not be reused


def test_read_to_close_body() -> None:
    c = feed(b"HTTP/1.0 200 OK\r\n\r\nsome bytes", eof=True)
    assert c.body == b"some bytes" and c.done == 1
    assert c.heads[0].to_close and not c.heads[0].keep_alive


def test_bodiless_responses() -> None:
    for raw in (
        b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\n\r\n",
    ):
        c = feed(raw)
        assert c.done == 1 and c.body == b""
    head = feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", head_request=True)
    assert head.done == 1 and head.heads[0].length == 0


def test_interim_responses_are_skipped() -> None:
    c = feed(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert [h.status for h in c.heads] == [200] and c.body == b"ok"


def test_connection_close_and_http10_are_not_kept_alive() -> None:
    assert not feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").heads[0].keep_alive
    assert not feed(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").heads[0].keep_alive


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\nb\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_invalid_responses_raise(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        feed(raw)


def test_truncated_body_raises_at_eof() -> None:
    with pytest.raises(ProtocolError):
        feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", eof=True)


def test_oversized_head_is_refused() -> None:
    with pytest.raises(ProtocolError):
        feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000)


def test_repeated_identical_content_length_is_accepted() -> None:
    head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2", False)
    assert head.length == 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=40), max_size=8), st.integers(min_value=1, max_value=17))
def test_any_chunking_round_trips(pieces: list[bytes], split: int) -> None:
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    wire += b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    c = feed(wire, split=split)
    assert c.body == b"".join(pieces) and c.done == 1 and not c.parser.leftover
