"""Fixtures for the data-plane tests: real aiohttp backends and a running proxy, all on loopback.

``backends(n)`` starts n aiohttp applications on 127.0.0.1 port 0; each answers a small set of
test routes and tags its responses with ``X-Backend``. ``proxy(backends, **config)`` starts a
``proxy.app.Worker`` (the same object ``presage proxy`` runs) on port 0 with its admin API, and
stops it at the end of the test. Nothing is mocked: every byte crosses a real socket.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.app import Worker
from proxy.config import build_config

GZIP_BODY = gzip.compress(b"presage " * 1000, mtime=0)
PATTERN = bytes(range(256)) * 256  # 64 KiB, the unit of generated bodies


@dataclass
class Backend:
    name: str
    port: int
    runner: web.AppRunner
    seen: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _backend_app(backend: Backend) -> web.Application:
    async def record(request: web.Request) -> None:
        backend.seen.append(
            {"method": request.method, "path": request.path_qs, "headers": list(request.headers.items())}
        )

    async def headers(request: web.Request) -> web.Response:
        await record(request)
        body = await request.read()
        return web.json_response(
            {
                "backend": backend.name,
                "method": request.method,
                "path": request.path_qs,
                "headers": list(request.headers.items()),
                "body_sha256": hashlib.sha256(body).hexdigest(),
                "body_len": len(body),
                "chunked": request.headers.get("Transfer-Encoding") == "chunked",
            },
            headers={"X-Backend": backend.name},
        )

    async def sha(request: web.Request) -> web.Response:
        digest, total = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            total += len(chunk)
        return web.json_response({"sha256": digest.hexdigest(), "len": total})

    async def echo(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"X-Backend": backend.name})
        await response.prepare(request)
        async for chunk in request.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response

    async def generated(request: web.Request) -> web.StreamResponse:
        remaining = int(request.query.get("n", "0"))
        response = web.StreamResponse(headers={"X-Backend": backend.name})
        if "length" in request.query:
            response.content_length = remaining
        await response.prepare(request)
        while remaining > 0:
            piece = PATTERN[: min(remaining, len(PATTERN))]
            await response.write(piece)
            remaining -= len(piece)
        await response.write_eof()
        return response

    async def status(request: web.Request) -> web.Response:
        await record(request)
        code = int(request.match_info["code"])
        body = None if code in (204, 304) else f"status {code}".encode()
        return web.Response(status=code, body=body, headers={"X-Backend": backend.name, "ETag": '"v1"'})

    async def slow(request: web.Request) -> web.Response:
        await record(request)
        await asyncio.sleep(float(request.query.get("delay", "1")))
        return web.Response(text="slow", headers={"X-Backend": backend.name})

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(
            body=GZIP_BODY, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"}
        )

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse(protocols=("chat",))
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == aiohttp.WSMsgType.TEXT and msg.data == "close-me":
                await sock.close(code=4001, message=b"asked to")
            elif msg.type == aiohttp.WSMsgType.TEXT:
                await sock.send_str(f"{backend.name}:{msg.data}")
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await sock.send_bytes(msg.data[::-1])
        return sock

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/headers", headers)
    app.router.add_route("*", "/sha", sha)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/bytes", generated)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/slow", slow)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/ws", ws)
    app.router.add_get("/healthz", healthz)
    return app


async def start_backend(name: str) -> Backend:
    backend = Backend(name, 0, None)  # type: ignore[arg-type]
    runner = web.AppRunner(_backend_app(backend), access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    backend.runner = runner
    backend.port = int(runner.addresses[0][1])
    return backend


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def dead_url() -> str:
    """A loopback URL with nothing listening (connections are refused)."""
    return f"http://127.0.0.1:{_closed_port()}"


@pytest.fixture
def gzip_body() -> bytes:
    return GZIP_BODY


@pytest.fixture
async def backends() -> AsyncIterator[Callable[[int], Awaitable[list[Backend]]]]:
    started: list[Backend] = []

    async def make(n: int) -> list[Backend]:
        new = [await start_backend(f"b{len(started) + i + 1}") for i in range(n)]
        started.extend(new)
        return new

    yield make
    for backend in started:
        await backend.runner.cleanup()


@dataclass
class RunningProxy:
    worker: Worker
    access_log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.worker.listen_port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.worker.admin_port}"

    @property
    def port(self) -> int:
        return self.worker.listen_port


def proxy_config(urls: Sequence[str], **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "admin": "127.0.0.1:0",
        "backends": [{"id": f"b{i + 1}", "url": url} for i, url in enumerate(urls)],
        "policy": "round_robin",
        "health": {"enabled": False},
        "drain_delay_s": 0.0,
        "grace_s": 5.0,
        "timeouts": {"connect_s": 1.0, "read_s": 5.0},
    }
    raw.update(overrides)
    return raw


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[RunningProxy]]]:
    running: list[RunningProxy] = []

    async def make(urls: Sequence[str], **overrides: Any) -> RunningProxy:
        log_path = tmp_path / f"access-{len(running)}.log"
        log_settings = overrides.get("access_log") or {}
        overrides["access_log"] = {"path": str(log_path), **log_settings}
        worker = Worker(build_config(proxy_config(urls, **overrides)))
        await worker.start()
        started = RunningProxy(worker, log_path)
        running.append(started)
        return started

    yield make
    for started in running:
        await started.worker.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_backend() -> AsyncIterator[Callable[[RawHandler], Awaitable[str]]]:
    """A hand-written backend (``asyncio.start_server``) for answers no real server would give."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(handler: RawHandler) -> str:
        async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            try:
                await handler(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(guarded, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for writer in writers:
        writer.close()
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
def raw() -> Callable[..., Awaitable[bytes]]:
    return raw_exchange


async def raw_exchange(port: int, data: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send raw bytes on a new connection and read until the server closes or goes quiet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        chunks: list[bytes] = []
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), read_timeout)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.close()
