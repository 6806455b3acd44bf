"""Bad requests and broken backends, over raw sockets: the right status, a reason, a live worker."""

from __future__ import annotations

import asyncio
import json

import pytest

MALFORMED = [
    pytest.param(b"GARBAGE\r\n\r\n", 400, id="request-line"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400, id="space-in-field-name"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n folded: 1\r\n\r\n", 400, id="obs-fold"),
    # request smuggling: both framings, or two lengths, are refused before any backend sees them
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        id="cl-and-te",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
        id="two-cl",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nxx", 400, id="te-not-chunked"
    ),
    pytest.param(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, id="long-target"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n", 431, id="long-field"),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
        431,
        id="too-many-fields",
    ),
]


@pytest.mark.parametrize(("wire", "status"), MALFORMED)
async def test_malformed_requests_are_refused_and_the_worker_survives(
    backends, proxy, client, raw, wire: bytes, status: int
) -> None:
    (b1,) = await backends(1)
    running = await proxy([b1.url])
    answer = await raw(running.port, wire)
    assert answer.split(b" ", 2)[1] == b"%d" % status, answer[
        :80
    ]  # HTTP/1.0: aiohttp answers parse errors so
    assert b"x-presage-reason: " in answer.lower()
    assert b1.seen == []  # nothing reached the backend
    async with client.get(f"{running.url}/headers") as resp:  # the worker still serves
        assert resp.status == 200


async def test_body_over_the_limit_is_413_with_or_without_a_length(backends, proxy, raw) -> None:
    (b1,) = await backends(1)
    running = await proxy([b1.url], max_body_bytes=1000)
    answer = await raw(
        running.port,
        b"POST /sha HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5000\r\n\r\n" + b"a" * 5000,
    )
    assert answer.startswith(b"HTTP/1.1 413 ")
    chunk = b"a" * 600
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4)) + b"0\r\n\r\n"
    answer = await raw(
        running.port,
        b"POST /sha HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
    )
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"body_too_large" in answer


async def test_expect_100_continue_is_answered_by_the_proxy(backends, proxy) -> None:
    (b1,) = await backends(1)
    running = await proxy([b1.url])
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(b"PUT /headers HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    assert final.startswith(b"HTTP/1.1 200 ")
    assert not any(k.lower() == "expect" for k, _ in b1.seen[0]["headers"])


async def test_invalid_upstream_response_is_502(proxy, client, raw_backend) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
        await writer.drain()

    running = await proxy([await raw_backend(garbage)])
    async with client.get(f"{running.url}/") as resp:
        assert resp.status == 502
        assert resp.headers["x-presage-reason"] == "invalid_response"


async def test_backend_closing_before_answering_is_502_upstream_reset(proxy, client, raw_backend) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")

    running = await proxy([await raw_backend(hang_up)])
    async with client.get(f"{running.url}/") as resp:
        assert resp.status == 502
        assert resp.headers["x-presage-reason"] == "upstream_reset"


async def test_a_body_cut_by_the_backend_is_cut_for_the_client(proxy, client, raw_backend) -> None:
    """A truncated upstream body must never reach the client as a complete chunked message."""

    async def truncate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"10000\r\n" + b"x" * 70_000)
        await writer.drain()

    running = await proxy([await raw_backend(truncate)])
    async with client.get(f"{running.url}/") as resp:
        assert resp.status == 200
        with pytest.raises(Exception):  # noqa: B017 - aiohttp reports the cut as a payload error
            await resp.read()


async def test_stale_keep_alive_connection_is_retried_on_a_fresh_one(proxy, client, raw_backend) -> None:
    """The backend closed a pooled connection just as it was reused: a replayable request is resent.

    This backend answers the first request of each connection and hangs up on the second, which
    is what a backend's keep-alive timeout racing the proxy's looks like from the proxy's side.
    """
    answered = 0

    async def first_request_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        await reader.readuntil(b"\r\n\r\n")
        answered += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")

    running = await proxy([await raw_backend(first_request_only)])
    for _ in range(3):
        async with client.get(f"{running.url}/") as resp:
            assert resp.status == 200
    assert answered == 3


async def test_refused_requests_are_logged_and_counted(backends, proxy, client, raw) -> None:
    (b1,) = await backends(1)
    running = await proxy([b1.url])
    await raw(running.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n")
    async with client.get(f"{running.admin}/metrics") as resp:
        text = await resp.text()
    assert 'presage_requests_total{backend="none",code="431",protocol="http1"} 1.0' in text
    await running.worker.stop()
    (line,) = [json.loads(x) for x in running.access_log.read_text().splitlines()]
    assert line["status"] == 431 and line["reason"] == "headers_too_large" and line["peer"] == "127.0.0.1"


async def test_connection_cap_queues_then_overflows(backends, proxy, client) -> None:
    """One connection per backend: a second request waits for it, up to connect_s, then 503s."""
    (b1,) = await backends(1)
    running = await proxy([b1.url], max_connections_per_backend=1, timeouts={"connect_s": 0.3, "read_s": 5})
    first = asyncio.create_task(client.get(f"{running.url}/slow?delay=0.1"))
    await asyncio.sleep(0.02)
    async with client.get(f"{running.url}/headers") as resp:  # waits ~0.1 s for the connection
        assert resp.status == 200
    (await first).release()
    slow = asyncio.create_task(client.get(f"{running.url}/slow?delay=1"))
    await asyncio.sleep(0.05)
    async with client.get(f"{running.url}/headers") as resp:
        assert resp.status == 503
        assert resp.headers["x-presage-reason"] == "pool_overflow"
        assert resp.headers["Retry-After"] == "1"
    (await slow).release()
