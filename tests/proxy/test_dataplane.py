"""The data plane against real aiohttp backends on loopback: forwarding, headers, bodies, retries."""

from __future__ import annotations

import asyncio
import hashlib
import json

import aiohttp
import psutil
import pytest

from proxy.balancer.base import RequestInfo
from proxy.pool import Outcome


def outcomes(running) -> list[tuple[str, Outcome]]:  # type: ignore[no-untyped-def]
    """Record every ``pool.end`` outcome of a running proxy (observing the real pool)."""
    pool = running.worker.state.pool
    seen: list[tuple[str, Outcome]] = []
    original = pool.end

    def end(ep, now, rtt_s, outcome):  # type: ignore[no-untyped-def]
        seen.append((ep.id, outcome))
        return original(ep, now, rtt_s, outcome)

    pool.end = end
    return seen


async def test_get_is_forwarded_with_forwarding_headers(backends, proxy, client) -> None:
    (b1,) = await backends(1)
    running = await proxy([b1.url])
    async with client.get(f"{running.url}/headers?q=1", headers={"X-Custom": "yes"}) as resp:
        assert resp.status == 200
        assert resp.headers["Via"] == "1.1 presage"
        body = await resp.json()
    sent = {k.lower(): v for k, v in body["headers"]}
    assert body["path"] == "/headers?q=1"
    assert sent["x-custom"] == "yes"
    assert sent["x-forwarded-for"] == "127.0.0.1"
    assert sent["x-forwarded-proto"] == "http"
    assert sent["x-forwarded-host"] == f"127.0.0.1:{running.port}"
    assert sent["host"] == f"127.0.0.1:{running.port}"  # the client's Host is kept, as HAProxy and Envoy do
    assert sent["via"] == "1.1 presage"
    assert sent["x-request-id"]


async def test_hop_by_hop_headers_are_not_forwarded(backends, proxy, client) -> None:
    (b1,) = await backends(1)
    running = await proxy([b1.url])
    headers = {
        "Connection": "keep-alive, X-Secret",
        "X-Secret": "1",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
    }
    async with client.get(f"{running.url}/headers", headers=headers) as resp:
        sent = {k.lower() for k, _ in (await resp.json())["headers"]}
    assert not sent & {"x-secret", "keep-alive", "te", "connection"}


async def test_untrusted_forwarding_headers_are_replaced(backends, proxy, client) -> None:
    (b1,) = await backends(1)
    spoofed = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https", "Forwarded": "for=6.6.6.6"}
    running = await proxy([b1.url])
    async with client.get(f"{running.url}/headers", headers=spoofed) as resp:
        sent = {k.lower(): v for k, v in (await resp.json())["headers"]}
    assert sent["x-forwarded-for"] == "127.0.0.1"
    assert sent["x-forwarded-proto"] == "http"
    assert "forwarded" not in sent

    trusting = await proxy([b1.url], trusted_hops=1, forwarded_header=True)
    async with client.get(f"{trusting.url}/headers", headers=spoofed) as resp:
        sent = {k.lower(): v for k, v in (await resp.json())["headers"]}
    assert sent["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"
    assert sent["x-forwarded-proto"] == "https"
    assert sent["forwarded"] == f'for=6.6.6.6, for=127.0.0.1;proto=http;host="127.0.0.1:{trusting.port}"'


@pytest.mark.parametrize("size", [0, 1000, 200_000])
async def test_request_bodies_arrive_intact(backends, proxy, client, size: int) -> None:
    (b1,) = await backends(1)
    running = await proxy([b1.url])
    body = bytes(i % 251 for i in range(size))
    async with client.post(f"{running.url}/headers", data=body) as resp:
        got = await resp.json()
    assert got["body_len"] == size
    assert got["body_sha256"] == hashlib.sha256(body).hexdigest()


async def test_chunked_upload_is_forwarded_chunked(backends, proxy, client) -> None:
    (b1,) = await backends(1)
    running = await proxy([b1.url])

    async def pieces():  # type: ignore[no-untyped-def]
        for i in range(5):
            yield bytes([i]) * 10_000

    async with client.post(f"{running.url}/headers", data=pieces()) as resp:
        got = await resp.json()
    assert got["chunked"] is True
    assert got["body_len"] == 50_000


async def test_response_bodies_stream_with_and_without_length(backends, proxy, client) -> None:
    (b1,) = await backends(1)
    running = await proxy([b1.url])
    for query in ("n=300000", "n=300000&length=1", "n=10", "n=10&length=1"):
        async with client.get(f"{running.url}/bytes?{query}") as resp:
            data = await resp.read()
        n = int(query.split("&")[0][2:])
        assert len(data) == n
        assert data == (bytes(range(256)) * 2000)[:n]
        if "length" in query:
            assert resp.headers["Content-Length"] == str(n)
        else:
            assert resp.headers.get("Transfer-Encoding") == "chunked" or resp.headers[
                "Content-Length"
            ] == str(n)


async def test_content_encoding_passes_untouched(backends, proxy, client, gzip_body) -> None:
    (b1,) = await backends(1)
    running = await proxy([b1.url])
    async with client.get(f"{running.url}/gzip", headers={"Accept-Encoding": "gzip"}) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        assert await resp.read() == gzip_body


async def test_head_204_and_304_keep_their_fields(backends, proxy, client) -> None:
    (b1,) = await backends(1)
    running = await proxy([b1.url])
    async with client.head(f"{running.url}/bytes?n=1234&length=1") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "1234"
        assert await resp.read() == b""
    async with client.get(f"{running.url}/status/204") as resp:
        assert resp.status == 204
        assert await resp.read() == b""
    async with client.get(f"{running.url}/status/304") as resp:
        assert resp.status == 304
        assert resp.headers["ETag"] == '"v1"'
    async with client.get(f"{running.url}/headers") as resp:  # the connection is still usable
        assert resp.status == 200


async def test_full_duplex_echo_streams_chunk_by_chunk(backends, proxy) -> None:
    """Each chunk comes back before the next is sent: the proxy holds no body in either direction."""
    (b1,) = await backends(1)
    running = await proxy([b1.url])
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    received = b""
    for i in range(5):
        piece = f"piece-{i}".encode() * 100
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        await writer.drain()
        while piece not in received:
            received += await asyncio.wait_for(reader.read(65536), 5)
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    while not received.endswith(b"0\r\n\r\n"):
        received += await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    assert received.startswith(b"HTTP/1.1 200")


async def test_websocket_upgrade_is_bridged(backends, proxy, client) -> None:
    (b1,) = await backends(1)
    running = await proxy([b1.url])
    async with client.ws_connect(f"{running.url}/ws", protocols=("chat",)) as ws:
        assert ws.protocol == "chat"
        await ws.send_str("hello")
        assert (await ws.receive()).data == "b1:hello"
        await ws.send_bytes(b"\x01\x02\x03")
        assert (await ws.receive()).data == b"\x03\x02\x01"
        await ws.send_str("close-me")
        msg = await ws.receive()
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert msg.data == 4001


async def test_idempotent_request_is_retried_on_another_backend(backends, proxy, client, dead_url) -> None:
    (b1,) = await backends(1)
    running = await proxy([dead_url, b1.url], retry={"attempts": 2})
    seen = outcomes(running)
    for _ in range(4):
        async with client.get(f"{running.url}/headers") as resp:
            assert resp.status == 200
            assert (await resp.json())["backend"] == "b1"
    assert ("b1", Outcome.CONNECT_ERROR) in seen
    assert sum(1 for _, o in seen if o is Outcome.OK) == 4


async def test_post_is_not_retried(backends, proxy, client, dead_url) -> None:
    (b1,) = await backends(1)
    running = await proxy([dead_url, b1.url], retry={"attempts": 3})
    statuses = []
    for _ in range(4):
        async with client.post(f"{running.url}/headers", data=b"x") as resp:
            statuses.append(resp.status)
            if resp.status == 502:
                assert resp.headers["x-presage-reason"] == "connect_error"
    assert sorted(statuses) == [200, 200, 502, 502]  # round robin: every other one hits the dead one


async def test_upstream_5xx_is_passed_through_and_reported(backends, proxy, client) -> None:
    (b1,) = await backends(1)
    running = await proxy([b1.url])
    seen = outcomes(running)
    async with client.get(f"{running.url}/status/503") as resp:
        assert resp.status == 503
        assert "x-presage-reason" not in resp.headers  # the backend's own answer, not the proxy's
    assert seen == [("b1", Outcome.HTTP_5XX)]


async def test_upstream_timeout_is_504(backends, proxy, client) -> None:
    (b1,) = await backends(1)
    running = await proxy([b1.url], timeouts={"connect_s": 1.0, "read_s": 0.3})
    seen = outcomes(running)
    async with client.get(f"{running.url}/slow?delay=1") as resp:
        assert resp.status == 504
        assert resp.headers["x-presage-reason"] == "upstream_timeout"
    assert seen == [("b1", Outcome.TIMEOUT)]


async def test_connect_failure_is_502_and_no_backend_is_503(proxy, client, dead_url) -> None:
    running = await proxy([dead_url], retry={"attempts": 1})
    async with client.get(f"{running.url}/") as resp:
        assert resp.status == 502
        assert resp.headers["x-presage-reason"] == "connect_error"
    for ep in running.worker.state.pool.endpoints:
        ep.healthy = False
    running.worker.state.pool.choose = lambda *a, **k: None  # every backend out: nothing eligible
    async with client.get(f"{running.url}/") as resp:
        assert resp.status == 503
        assert resp.headers["x-presage-reason"] == "no_backend"
        assert resp.headers["Retry-After"] == "1"


async def test_client_abort_is_reported_to_the_pool(backends, proxy) -> None:
    (b1,) = await backends(1)
    running = await proxy([b1.url])
    seen = outcomes(running)
    _, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(b"GET /slow?delay=0.8 HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.close()
    for _ in range(50):
        if seen:
            break
        await asyncio.sleep(0.05)
    assert seen == [("b1", Outcome.CLIENT_ABORT)]
    assert running.worker.state.pool.endpoints[0].in_flight == 0


async def test_explain_header_and_access_log(backends, proxy, client) -> None:
    (b1,) = await backends(1)
    running = await proxy([b1.url], explain_header=True)
    async with client.get(f"{running.url}/headers", headers={"X-Request-Id": "req-42"}) as resp:
        assert resp.headers["x-presage-backend"] == "b1"
        assert resp.headers["x-presage-policy"] == "round_robin"
    await running.worker.stop()
    line = json.loads(running.access_log.read_text().splitlines()[0])
    assert line["request_id"] == "req-42"
    assert line["status"] == 200 and line["upstream_status"] == 200
    assert line["backend"] == "b1" and line["method"] == "GET" and line["path"] == "/headers"
    assert line["reason"] is None and line["duration_s"] >= line["upstream_duration_s"] > 0


async def test_access_log_sampling_keeps_errors(backends, proxy, client) -> None:
    (b1,) = await backends(1)
    running = await proxy([b1.url], access_log={"sample": 0.0})
    for _ in range(5):
        async with client.get(f"{running.url}/headers") as resp:
            assert resp.status == 200
    async with client.get(f"{running.url}/slow?delay=0", headers={"Content-Length": "999999999999"}) as resp:
        assert resp.status == 413
    await running.worker.stop()
    lines = [json.loads(x) for x in running.access_log.read_text().splitlines()]
    assert [x["status"] for x in lines] == [413]
    assert lines[0]["reason"] == "body_too_large"


async def test_64_mib_each_way_streams_with_bounded_memory(backends, proxy, client) -> None:
    """128 MiB cross the proxy while this process (client, proxy and backend) grows < 32 MiB.

    A 1 GiB upload would take too long for the suite; 64 MiB each way is already far above every
    buffer on the path (64 KiB socket reads, 256 KiB upstream high-water mark), so a proxy that
    held a body would show it as RSS growth of at least 64 MiB.
    """
    (b1,) = await backends(1)
    running = await proxy([b1.url])
    size, piece = 64 << 20, bytes(range(256)) * 256
    process = psutil.Process()
    base = peak = process.memory_info().rss
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            await asyncio.sleep(0.01)

    async def upload():  # type: ignore[no-untyped-def]
        for _ in range(size // len(piece)):
            yield piece

    sampler = asyncio.create_task(sample())
    async with client.post(f"{running.url}/sha", data=upload()) as resp:
        uploaded = await resp.json()
    digest, received = hashlib.sha256(), 0
    async with client.get(f"{running.url}/bytes?n={size}&length=1") as resp:
        async for chunk in resp.content.iter_chunked(1 << 16):
            digest.update(chunk)
            received += len(chunk)
    done.set()
    await sampler
    expected = hashlib.sha256(piece * (size // len(piece))).hexdigest()
    assert uploaded == {"sha256": expected, "len": size}
    assert received == size and digest.hexdigest() == expected
    assert peak - base < 32 << 20, f"RSS grew by {(peak - base) >> 20} MiB"


@pytest.mark.parametrize(
    ("spec", "path", "headers", "expected"),
    [
        ("header:X-Size", "/headers", {"X-Size": "512"}, 512.0),
        ("query:size", "/headers?size=2048", {}, 2048.0),
        (r"path:^/img/(\d+)", "/img/640/x.png", {}, 640.0),
        ("header:X-Size", "/headers", {}, 0.0),
    ],
)
async def test_request_class_reaches_the_policy(
    backends, proxy, client, spec, path, headers, expected
) -> None:
    (b1,) = await backends(1)
    running = await proxy([b1.url], class_from=spec)
    pool = running.worker.state.pool
    seen: list[RequestInfo] = []
    original = pool.choose

    def choose(request, rng, now, exclude=()):  # type: ignore[no-untyped-def]
        seen.append(request)
        return original(request, rng, now, exclude)

    pool.choose = choose
    async with client.post(f"{running.url}{path}", data=b"abc", headers=headers) as resp:
        await resp.read()
    assert seen == [RequestInfo(method="POST", body_bytes=3, req_class=expected, idempotent=False)]
