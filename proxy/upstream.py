"""Keep-alive HTTP/1.1 connections to the backends: one pool per backend in each worker.

The request path needs three things from an upstream client: reuse a warm connection, write
bytes, and hand back the response head and body pieces with back-pressure. This module does only
that, on asyncio protocols and the ``http1`` parser, because it runs once per proxied request: on
the benchmark machine an ``aiohttp.ClientSession`` request costs ~190 us of CPU by itself (a bare
asyncio protocol exchange ~25 us), more than the rest of the proxy's work for a small request.
The worker's ``ClientSession`` is still used where its generality pays: WebSocket upgrades and
health checks.

Per backend (``Origin``): a LIFO stack of idle connections (the most recently used one is the
warmest and least likely to have been closed by the backend's keep-alive timer), a cap on open
connections with FIFO waiters, and an idle timeout. Per connection: a read timeout measured
between two reads (NGINX ``proxy_read_timeout``), paused while the client is the slow side and
checked by one sweep task per worker (``SWEEP_S``) rather than a timer per request;
response bytes beyond ``HIGH_WATER`` pause the socket until the handler catches up, so a large
body never sits in memory (the same flow control aiohttp's ``StreamReader`` applies).
"""

from __future__ import annotations

import asyncio
import collections
import ssl as ssl_module
from urllib.parse import urlsplit

from .errors import (
    InvalidUpstreamResponse,
    PoolOverflow,
    ProxyError,
    UpstreamConnectError,
    UpstreamReset,
    UpstreamTimeout,
)
from .http1 import ProtocolError, ResponseHead, ResponseParser
from .tasks import cancel_and_wait

IDLE_TIMEOUT_S = 30.0
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
SWEEP_S = 0.25  # read timeouts are enforced to within this


class UpstreamConnection(asyncio.Protocol):
    """One connection to a backend, carrying one request/response exchange at a time."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.loop = origin.loop
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser(self._on_head, self._on_body, self._on_done)
        self.closed = False
        self.counted = False
        self.reused = False
        self.idle_since = 0.0
        self._active = False
        self._request_sent = False
        self._head: ResponseHead | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._complete = False
        self._error: ProxyError | None = None
        self._got_bytes = False
        self._waiter: asyncio.Future[None] | None = None
        self._read_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._read_timeout = 30.0
        self._last_io = 0.0

    # -- asyncio.Protocol -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self._active:  # bytes nobody asked for: the connection is out of sync
            self.close()
            return
        self._last_io = self.loop.time()
        self._got_bytes = True
        try:
            self.parser.feed(data)
        except ProtocolError as exc:
            self._fail(InvalidUpstreamResponse(str(exc)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._active and not self._complete and self._error is None:
            try:
                self.parser.feed_eof()
            except ProtocolError:
                if self._got_bytes:
                    self._fail(InvalidUpstreamResponse("backend closed the connection mid-response"))
                else:
                    self._fail(UpstreamReset("backend closed the connection before responding"))
        self._wake_drain()
        self.origin.lost(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    # -- parser callbacks -----------------------------------------------------------------------
    def _on_head(self, head: ResponseHead) -> None:
        self._head = head
        self._wake()

    def _on_body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def _on_done(self) -> None:
        self._complete = True
        self.origin.active.discard(self)
        self._wake()

    # -- one exchange ---------------------------------------------------------------------------
    def begin(self, data: bytes, *, head_request: bool, request_complete: bool, read_timeout: float) -> None:
        """Write the request head (and a buffered body) and start expecting the response."""
        assert self.transport is not None and not self._active
        self._active = True
        self._request_sent = request_complete
        self._head = None
        self._chunks.clear()
        self._buffered = 0
        self._complete = False
        self._error = None
        self._got_bytes = False
        self._read_timeout = read_timeout
        self.parser.start(head_request)
        self._last_io = self.loop.time()
        self.origin.active.add(self)
        self.transport.write(data)

    async def write(self, data: bytes) -> None:
        """Write part of a streamed request body, waiting while the socket buffer is full."""
        if self._error is not None:
            raise self._error
        if self.closed or self.transport is None:
            raise UpstreamReset("backend closed the connection while the request was sent")
        self.transport.write(data)
        self._last_io = self.loop.time()
        while self._write_paused and not self.closed:
            self._drain_waiter = self.loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    def request_done(self) -> None:
        self._request_sent = True

    def abort(self, error: ProxyError) -> None:
        """Give up on the exchange (the request side failed); waiters see ``error``."""
        self._fail(error)

    async def head(self) -> ResponseHead:
        while self._head is None:
            if self._error is not None:
                raise self._error
            await self._wait()
        return self._head

    @property
    def complete(self) -> bool:
        return self._complete

    def take_body(self) -> bytes:
        """Everything buffered so far, at once (the small-response path)."""
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        self._resume_if_drained()
        return data

    async def read(self) -> bytes:
        """The next body piece, or ``b""`` once the response is complete."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._complete:
                return b""
            await self._wait()
        data = self._chunks.popleft()
        self._buffered -= len(data)
        self._resume_if_drained()
        return data

    async def read_all(self, limit: int) -> bytes:
        """The whole body (``limit`` bytes at most, so flow control can be lifted meanwhile)."""
        while not self._complete:
            if self._error is not None:
                raise self._error
            if self._buffered > limit:
                raise InvalidUpstreamResponse("response body longer than its Content-Length")
            if self._read_paused and self.transport is not None and not self.closed:
                self._read_paused = False
                self.transport.resume_reading()
            await self._wait()
        if self._error is not None:
            raise self._error
        return self.take_body()

    def release(self) -> None:
        """End the exchange: back to the pool when it finished cleanly, else close."""
        self._active = False
        self.origin.active.discard(self)
        reusable = (
            self._complete
            and self._request_sent
            and self._error is None
            and not self.closed
            and self._head is not None
            and self._head.keep_alive
            and not self.parser.leftover
        )
        if reusable:
            self.reused = True
            self.origin.put(self)
        else:
            self.close()

    def close(self) -> None:
        self._active = False
        self.origin.active.discard(self)
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    # -- internals ------------------------------------------------------------------------------
    async def _wait(self) -> None:
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resume_if_drained(self) -> None:
        if self._read_paused and self._buffered <= LOW_WATER and self.transport is not None:
            self._read_paused = False
            self._last_io = self.loop.time()
            if not self.closed:
                self.transport.resume_reading()

    def _fail(self, error: ProxyError) -> None:
        if self._error is None:
            self._error = error
        self.origin.active.discard(self)
        self._wake()
        self._wake_drain()
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    def check_idle(self, now: float) -> None:
        """Called by the pool's sweep: fail the exchange after ``read_timeout`` without data."""
        if not self._active or self._complete or self._error is not None:
            return
        if self._read_paused:  # the client is the slow side, not the backend
            self._last_io = now
        elif now - self._last_io >= self._read_timeout:
            self._fail(UpstreamTimeout(f"no data from the backend for {self._read_timeout:g}s"))


class Origin:
    """The connection pool of one backend (scheme, host, port)."""

    def __init__(
        self,
        url: str,
        *,
        limit: int,
        loop: asyncio.AbstractEventLoop,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        parts = urlsplit(url)
        self.url = url
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.authority = parts.netloc
        self.ssl: ssl_module.SSLContext | None = (
            ssl_module.create_default_context() if parts.scheme == "https" else None
        )
        self.limit = limit
        self.loop = loop
        self.idle_timeout_s = idle_timeout_s
        self.open = 0
        self.retired = False
        self.active: set[UpstreamConnection] = set()  # exchanges in progress, for the read-timeout sweep
        self._idle: list[UpstreamConnection] = []
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    async def acquire(self, connect_timeout: float, *, fresh: bool = False) -> UpstreamConnection:
        """A warm idle connection when there is one (unless ``fresh``), else a new one."""
        while True:
            conn = None if fresh else self.pop_idle()
            if conn is not None:
                return conn
            if self.open < self.limit:
                return await self._connect(connect_timeout)
            await self._wait_for_slot(connect_timeout)

    def pop_idle(self) -> UpstreamConnection | None:
        """The most recently used idle connection still open (the request path's fast case)."""
        now = self.loop.time()
        while self._idle:
            conn = self._idle.pop()
            if conn.closed:
                continue
            if now - conn.idle_since > self.idle_timeout_s:
                conn.close()
                continue
            return conn
        return None

    async def _connect(self, connect_s: float) -> UpstreamConnection:
        self.open += 1
        try:
            async with asyncio.timeout(connect_s):
                _, conn = await self.loop.create_connection(
                    lambda: UpstreamConnection(self), self.host, self.port, ssl=self.ssl
                )
        except TimeoutError:
            self._released_slot()
            raise UpstreamConnectError(f"connect to {self.authority}: no answer in {connect_s:g}s") from None
        except OSError as exc:
            self._released_slot()
            raise UpstreamConnectError(f"connect to {self.authority}: {exc.strerror or exc}") from None
        except BaseException:
            self._released_slot()
            raise
        conn.counted = True
        if conn.closed:  # lost between connect and now
            self.lost(conn)
            raise UpstreamConnectError(f"connection to {self.authority} closed at once")
        return conn

    async def _wait_for_slot(self, wait_s: float) -> None:
        waiter = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(wait_s):
                await waiter
        except TimeoutError:
            raise PoolOverflow(f"{self.limit} connections to {self.authority} all busy") from None
        finally:
            if not waiter.done():
                waiter.cancel()

    def put(self, conn: UpstreamConnection) -> None:
        if self.retired:
            conn.close()
            return
        conn.idle_since = self.loop.time()
        self._idle.append(conn)
        self.wake_one()

    def lost(self, conn: UpstreamConnection) -> None:
        """Called once per counted connection when it closes."""
        if not conn.counted:
            return
        conn.counted = False
        if conn in self._idle:
            self._idle.remove(conn)
        self._released_slot()

    def _released_slot(self) -> None:
        self.open -= 1
        self.wake_one()

    def wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def sweep(self, now: float) -> None:
        for conn in list(self.active):
            conn.check_idle(now)

    def close(self) -> None:
        for conn in list(self._idle):
            conn.close()
        self._idle.clear()


class UpstreamPool:
    """Every backend's ``Origin`` in one worker, kept across config reloads by URL."""

    def __init__(
        self, *, limit_per_backend: int, idle_timeout_s: float = IDLE_TIMEOUT_S, sweep_s: float = SWEEP_S
    ) -> None:
        self.limit_per_backend = limit_per_backend
        self.idle_timeout_s = idle_timeout_s
        self.sweep_s = sweep_s
        self._origins: dict[str, Origin] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the read-timeout sweep (one task per worker instead of a timer per request)."""
        self._sweeper = asyncio.get_running_loop().create_task(
            self._sweep_loop(), name="presage-upstream-sweep"
        )

    async def _sweep_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.sweep_s)
            now = loop.time()
            for origin in list(self._origins.values()):
                origin.sweep(now)

    def origin(self, url: str) -> Origin:
        origin = self._origins.get(url)
        if origin is None:
            origin = Origin(
                url,
                limit=self.limit_per_backend,
                loop=asyncio.get_running_loop(),
                idle_timeout_s=self.idle_timeout_s,
            )
            self._origins[url] = origin
        return origin

    def set_limit(self, limit_per_backend: int) -> None:
        """A reload changed ``max_connections_per_backend``; waiters get any new room at once."""
        self.limit_per_backend = limit_per_backend
        for origin in self._origins.values():
            origin.limit = limit_per_backend
            for _ in range(max(0, limit_per_backend - origin.open)):
                origin.wake_one()

    def retain(self, urls: set[str]) -> None:
        """Close the pools of backends that left the config."""
        for url in list(self._origins):
            if url not in urls:
                origin = self._origins.pop(url)
                origin.retired = True
                origin.close()

    async def close(self) -> None:
        await cancel_and_wait(self._sweeper)
        self._sweeper = None
        for origin in self._origins.values():
            origin.close()
        self._origins.clear()
