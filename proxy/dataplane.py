"""The request handler: choose a backend, forward the request, stream the response back.

Per request (one coroutine, no executor hop; the policy call is inline):

1. check the request (CONNECT refused, ``Content-Length`` against ``max_body_bytes``) and rewrite
   its header block (``headers.rewrite_request``: hop-by-hop, Via, forwarding headers);
2. choose an endpoint from the current immutable ``DataPlaneState`` (read once: a SIGHUP reload
   swaps the whole state, never a part of it) with ``BackendPool.choose``;
3. send it on a pooled keep-alive connection (``upstream``); a body up to ``BUFFER_LIMIT`` is
   read first so the request can be replayed, a longer or chunked one is streamed by a pump task
   while the response is awaited (full duplex, bounded memory);
4. on a connect failure of an idempotent, replayable request, retry on a *different* backend
   while the retry budget allows (Finagle/Linkerd retry budgets); a reused keep-alive connection
   that the backend had already closed is retried once on a fresh one;
5. answer: small bodies in one write, the rest streamed chunk by chunk; ``Content-Encoding`` and
   the bytes themselves are never touched.

``pool.end`` always receives what happened (OK, HTTP_5XX, CONNECT_ERROR, TIMEOUT, CLIENT_ABORT)
and the time to the response head, so a backend failing fast never looks fast to peak-EWMA.
Errors follow ``errors``' fixed mapping; ``asyncio.CancelledError`` (client gone, worker
stopping) is recorded and re-raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import ClientSession, hdrs, web

from predictor_runtime.samples import class_value

from .accesslog import AccessLog
from .balancer.base import RequestInfo
from .balancer.endpoint import Endpoint
from .config import ClassFrom
from .errors import (
    BodyTooLarge,
    ClientAborted,
    MethodNotAllowed,
    NoBackend,
    ProxyError,
    UpstreamConnectError,
    UpstreamReset,
    UpstreamTimeout,
)
from .headers import (
    ForwardingPolicy,
    RewrittenRequest,
    raw_response_block,
    response_headers,
    rewrite_request,
    str_request_headers,
)
from .hedge import HedgeMetrics, HedgeSettings
from .http1 import ResponseHead
from .metrics import BackendMetrics, Metrics
from .pool import BackendPool, Outcome
from .retry_budget import RetryBudget
from .upstream import Origin, UpstreamConnection
from .websocket import bridge, connect_upstream

if TYPE_CHECKING:  # the tap pulls in numpy/onnxruntime; only workers that predict import it
    from .predict.tap import DecisionTap

IDEMPOTENT: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
BUFFER_LIMIT = 64 * 1024  # request bodies up to this are read before sending, so they can be replayed
SMALL_RESPONSE = 64 * 1024  # response bodies up to this are answered in one write
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Route:
    """One backend as the handler needs it, built when the state is built."""

    endpoint: Endpoint
    origin: Origin
    host: bytes  # Host field for clients that sent none
    metrics: BackendMetrics


@dataclass(frozen=True, slots=True)
class DataPlaneState:
    """Everything the handler reads, swapped as one reference on reload."""

    pool: BackendPool
    routes: Mapping[str, Route]
    policy_name: str
    forwarding: ForwardingPolicy
    retry_budget: RetryBudget
    retries: int
    connect_s: float
    read_s: float
    total_s: float | None
    max_body_bytes: int
    class_from: ClassFrom | None
    explain: bool
    via_line: bytes = b"Via: 1.1 presage\r\n"
    tap: DecisionTap | None = None  # prediction feedback, shadow scoring, sample recording
    hedge: HedgeSettings | None = None  # prediction-driven hedging (hedge.py), when enabled
    hedge_budget: RetryBudget | None = None
    hedge_metrics: HedgeMetrics | None = None


class Exchange:
    """What one request did, filled in as it goes; read by the access log and metrics."""

    __slots__ = (
        "attempts",
        "backend",
        "bytes_in",
        "bytes_out",
        "decision",
        "reason",
        "request_id",
        "response",
        "start",
        "status",
        "upstream_s",
        "upstream_status",
        "wall",
    )

    def __init__(self, start: float) -> None:
        self.start = start
        self.wall = time.time()
        self.status = 0
        self.backend: str | None = None
        self.decision: bytes | None = None  # x-presage-decision value (--explain-header)
        self.upstream_status = 0
        self.upstream_s = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self.reason: str | None = None
        self.request_id = ""
        self.attempts = 0
        self.response: web.StreamResponse | None = None  # set once a streamed response started


class Leg:
    """One copy of a request on one backend (a hedged request has two)."""

    __slots__ = ("conn", "dispatched", "head", "outcome", "pump", "route", "rtt", "ticket")

    def __init__(self, route: Route, ticket: Any, dispatched: float) -> None:
        self.route = route
        self.ticket = ticket  # the tap's ticket (the first leg only: the decision was for it)
        self.dispatched = dispatched
        self.conn: UpstreamConnection | None = None
        self.head: ResponseHead | None = None
        self.rtt = 0.0
        self.outcome = Outcome.CLIENT_ABORT  # until it answers or fails: no health evidence
        self.pump: asyncio.Task[None] | None = None


class WrittenResponse(web.StreamResponse):
    """A response the handler already wrote to the transport; aiohttp only keeps the connection."""

    def __init__(self, status: int, keep_alive: bool) -> None:
        super().__init__(status=status)
        self._written_keep_alive = keep_alive

    @property
    def keep_alive(self) -> bool:
        return self._written_keep_alive

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


class ProxyStreamResponse(web.StreamResponse):
    """A streamed response keeping the backend's fields: aiohttp must not invent a type or server."""

    async def _prepare_headers(self) -> None:
        had_type, had_server = hdrs.CONTENT_TYPE in self._headers, hdrs.SERVER in self._headers
        await super()._prepare_headers()
        _undo_defaults(self._headers, had_type, had_server)


def _undo_defaults(headers: Any, had_type: bool, had_server: bool) -> None:
    if not had_type:
        headers.popall(hdrs.CONTENT_TYPE, None)
    if not had_server:
        headers.popall(hdrs.SERVER, None)


def request_class(class_from: ClassFrom | None, request: web.BaseRequest) -> float:
    if class_from is None:
        return 0.0
    if class_from.kind == "header":
        return class_value(request.headers.get(class_from.name))
    if class_from.kind == "query":
        return class_value(request.query.get(class_from.name))
    return class_from.value({}, request.path, {})


_INFO_CACHE: dict[tuple[str, int, float], RequestInfo] = {}
_INFO_CACHE_MAX = 4096


def request_info(method: str, body_bytes: int, req_class: float) -> RequestInfo:
    """``RequestInfo`` is frozen, so equal requests share one instance (saves ~2 us a request)."""
    key = (method, body_bytes, req_class)
    info = _INFO_CACHE.get(key)
    if info is None:
        if len(_INFO_CACHE) >= _INFO_CACHE_MAX:
            _INFO_CACHE.clear()
        info = _INFO_CACHE[key] = RequestInfo(method, body_bytes, req_class, method in IDEMPOTENT)
    return info


def outcome_for(error: ProxyError) -> Outcome:
    if isinstance(error, UpstreamTimeout):
        return Outcome.TIMEOUT
    if isinstance(error, UpstreamConnectError | UpstreamReset):
        return Outcome.CONNECT_ERROR
    if isinstance(error, ClientAborted | BodyTooLarge):
        return Outcome.CLIENT_ABORT
    return Outcome.HTTP_5XX


class DataPlane:
    def __init__(
        self,
        state: DataPlaneState,
        *,
        metrics: Metrics,
        access_log: AccessLog,
        session: ClientSession | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self.metrics = metrics
        self.access_log = access_log
        self.session = session
        self.rng = rng or random.Random()
        self.clock = clock
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}{random.getrandbits(24):06x}-"

    async def idle(self) -> None:
        """Return once no request is in flight (a draining worker waits for this)."""
        while self.in_flight:
            self._idle.clear()
            await self._idle.wait()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        st = self.state
        ex = Exchange(self.clock())
        self.in_flight += 1
        try:
            if st.total_s is None:
                return await self._forward(request, st, ex)
            async with asyncio.timeout(st.total_s):
                return await self._forward(request, st, ex)
        except ProxyError as err:  # raised before any byte of a response was sent
            ex.reason = err.reason
            ex.status = err.status
            return error_response(request, err)
        except TimeoutError:  # the total timeout
            late = UpstreamTimeout(f"no complete response within {st.total_s:g}s")
            ex.reason = late.reason
            if ex.response is not None:  # already streaming: cut the connection, never fake an end
                _abort_client(request)
                return ex.response
            ex.status = late.status
            return error_response(request, late)
        except asyncio.CancelledError:
            if ex.status != 101:  # an upgraded connection ends when the client leaves: no abort
                ex.reason = ex.reason or "client_abort"
                ex.status = ex.status or ClientAborted.status
            raise
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()
            self._record(request, ex)

    async def _forward(
        self, request: web.BaseRequest, st: DataPlaneState, ex: Exchange
    ) -> web.StreamResponse:
        method = request.method
        if method == "CONNECT":
            raise MethodNotAllowed("CONNECT tunnels are not proxied")
        length = request.content_length
        if length is not None and length > st.max_body_bytes:
            raise BodyTooLarge(f"Content-Length {length} exceeds {st.max_body_bytes}")
        version = request.version
        rw = rewrite_request(
            request.raw_headers,
            peer=request.remote or "unknown",
            scheme="http",
            version=f"{version.major}.{version.minor}",
            policy=st.forwarding,
        )
        if rw.request_id is None:
            ex.request_id = f"{self._id_prefix}{next(self._ids):x}"
            rw.block += b"X-Request-Id: " + ex.request_id.encode() + b"\r\n"
        else:
            ex.request_id = rw.request_id
        info = request_info(method, length or 0, request_class(st.class_from, request))
        if rw.upgrade == "websocket":
            return await self._websocket(request, st, ex, rw, info)
        body: bytes | None = None
        streamed = False
        chunked = False
        if request.body_exists:
            if rw.expect_continue and request.version >= (1, 1):
                await request.writer.write(_CONTINUE)
                request.writer.output_size = 0  # the final response has not started
            if length is not None and length <= BUFFER_LIMIT:
                body = await request.read()
                ex.bytes_in = len(body)
            else:
                streamed = True
                chunked = length is None
        target = request.raw_path.encode("utf-8", "surrogateescape")
        if not target.startswith(b"/") and target != b"*":
            target = request.rel_url.raw_path_qs.encode("utf-8", "surrogateescape")
        prefix = method_line(request.method, target)
        if chunked:
            rw.block += b"Transfer-Encoding: chunked\r\n"
        replayable = not streamed

        def data_for(route: Route) -> bytes:
            """The request as sent to ``route``'s backend (Host filled in if the client sent none)."""
            data = prefix + (b"" if rw.host else route.host) + rw.block + b"\r\n"
            return data + body if body is not None else data

        retries_left = st.retries if info.idempotent and replayable else 0
        now = self.clock()
        st.retry_budget.deposit(now)
        if st.hedge_budget is not None:
            st.hedge_budget.deposit(now)
        exclude: list[str] = []  # ids already tried by this request
        last_error: ProxyError | None = None
        while True:
            ep = st.pool.choose(info, self.rng, now, exclude)
            if ep is None:
                raise last_error or NoBackend("no healthy backend")
            route = st.routes.get(ep.id) or self.state.routes.get(ep.id)
            if route is None:  # (a reload can remove a backend while a request retries)
                raise last_error or NoBackend(f"backend {ep.id} left the configuration")
            data = data_for(route)
            try:
                return await self._attempt(request, st, ex, route, data, chunked, streamed, info, data_for)
            except UpstreamConnectError as err:
                now = self.clock()
                if retries_left <= 0 or not st.retry_budget.try_withdraw(now):
                    raise
                retries_left -= 1
                last_error = err
                exclude.append(ep.id)
                self.metrics.retries.inc()

    async def _attempt(
        self,
        request: web.BaseRequest,
        st: DataPlaneState,
        ex: Exchange,
        route: Route,
        data: bytes,
        chunked: bool,
        streamed: bool,
        info: RequestInfo,
        data_for: Callable[[Route], bytes],
    ) -> web.StreamResponse:
        """One try: on one backend or, hedged (``hedge.py``), on the chosen backend and then the
        runner-up, each leg bracketed by ``pool.begin``/``pool.end``."""
        ep = route.endpoint
        ex.backend = ep.id
        ex.attempts += 1
        dispatched = self.clock()
        tap = st.tap
        ticket = None
        if tap is not None:  # before begin: record the in-flight counts the policy saw
            ticket = tap.dispatched(ep, st.pool, info, ex.request_id, dispatched)
            if st.explain:
                ex.decision = tap.explain(ticket)
        st.pool.begin(ep, dispatched)
        first = Leg(route, ticket, dispatched)
        legs = [first]
        leg = first
        head_request = request.method == "HEAD"
        try:
            hedge = self._hedge_target(st, info, streamed, ticket)
            if hedge is None:
                await self._open(first, st, data, head_request, request, streamed, chunked, ex)
            else:
                leg = await self._race(legs, hedge, st, data, data_for, head_request, request, ex)
            conn, head, route = leg.conn, leg.head, leg.route
            assert conn is not None and head is not None
            ex.backend = route.endpoint.id
            leg.outcome = Outcome.HTTP_5XX if head.status >= 500 else Outcome.OK
            ex.upstream_status, ex.upstream_s = head.status, leg.rtt
            route.metrics.upstream_duration.observe(leg.rtt)
            ex.status = head.status
            if 0 <= head.length <= SMALL_RESPONSE:
                body = b""
                if head.length:
                    body = conn.take_body() if conn.complete else await conn.read_all(head.length)
                ex.bytes_out = len(body)
                return self._write_whole(request, st, route, head, body, ex.decision)
            response, leg.outcome = await self._stream(request, st, ex, route, conn, head, leg.outcome)
            return response
        except ProxyError as err:
            leg.outcome = outcome_for(err)
            leg.rtt = leg.rtt or self.clock() - leg.dispatched
            raise
        finally:
            for one in legs:
                if one.pump is not None:  # only a streamed upload has one: no await otherwise
                    await _stop(one.pump)
                self._end_leg(one, st)

    async def _open(
        self,
        leg: Leg,
        st: DataPlaneState,
        data: bytes,
        head_request: bool,
        request: web.BaseRequest,
        streamed: bool,
        chunked: bool,
        ex: Exchange,
    ) -> None:
        """Send the request on ``leg``'s backend and wait for the response head (``leg.head``)."""
        origin = leg.route.origin
        try:
            conn = leg.conn = origin.pop_idle() or await origin.acquire(st.connect_s)
            conn.begin(data, head_request=head_request, request_complete=not streamed, read_timeout=st.read_s)
            if streamed:
                leg.pump = asyncio.create_task(self._pump(request, conn, chunked, st.max_body_bytes, ex))
            try:
                head = await conn.head()
            except UpstreamReset:
                # A reused keep-alive connection the backend had closed while idle (its keep-alive
                # timer raced ours): a replayable request goes once more on a fresh connection.
                if streamed or not conn.reused:
                    raise
                conn.release()
                leg.conn = None
                conn = leg.conn = await origin.acquire(st.connect_s, fresh=True)
                conn.begin(data, head_request=head_request, request_complete=True, read_timeout=st.read_s)
                head = await conn.head()
            leg.head = head
            leg.rtt = self.clock() - leg.dispatched
        except ProxyError as err:
            leg.outcome = outcome_for(err)
            leg.rtt = self.clock() - leg.dispatched
            raise

    def _hedge_target(
        self, st: DataPlaneState, info: RequestInfo, streamed: bool, ticket: Any
    ) -> tuple[Route, float] | None:
        """The runner-up's route and the delay before a copy goes there, when this request may be
        hedged: idempotent, replayable, routed by the model (not a fallback), with a runner-up."""
        hedge = st.hedge
        if hedge is None or ticket is None or streamed or not info.idempotent:
            return None
        decision = st.tap.decision_of(ticket)  # type: ignore[union-attr]
        if decision is None or decision.fallback is not None or decision.runner_up is None:
            return None
        predicted = decision.predicted_s * st.tap.scale()  # type: ignore[union-attr]  # the live level
        if not predicted > 0.0:  # NaN or nothing
            return None
        second = st.routes.get(decision.runner_up.id)
        if second is None or second.endpoint is decision.endpoint:
            return None
        return second, hedge.delay_s(predicted)

    async def _race(
        self,
        legs: list[Leg],
        hedge: tuple[Route, float],
        st: DataPlaneState,
        data: bytes,
        data_for: Callable[[Route], bytes],
        head_request: bool,
        request: web.BaseRequest,
        ex: Exchange,
    ) -> Leg:
        """The first leg, and after ``delay`` without a response head a copy on the runner-up (if
        the budget allows); the first head wins. The loser's task is cancelled; its connection is
        closed when the legs are closed (an unfinished exchange is never pooled)."""
        first = legs[0]
        second_route, delay = hedge
        tasks: dict[asyncio.Task[None], Leg] = {
            asyncio.create_task(self._open(first, st, data, head_request, request, False, False, ex)): first
        }
        try:
            done, _ = await asyncio.wait(tasks, timeout=delay)
            if not done:
                now = self.clock()
                assert st.hedge_budget is not None and st.hedge_metrics is not None
                if st.hedge_budget.try_withdraw(now):
                    st.pool.begin(second_route.endpoint, now)
                    second = Leg(second_route, None, now)
                    legs.append(second)
                    st.hedge_metrics.sent.inc()
                    copy = data_for(second_route)
                    opened = self._open(second, st, copy, head_request, request, False, False, ex)
                    tasks[asyncio.create_task(opened)] = second
                else:
                    st.hedge_metrics.denied.inc()
            pending = set(tasks)
            error: BaseException | None = None
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    exc = task.exception()
                    if exc is None:
                        winner = tasks[task]
                        if winner is not first:
                            st.hedge_metrics.won.inc()  # type: ignore[union-attr]
                        return winner
                    if error is None or tasks[task] is first:  # the chosen backend's error is reported
                        error = exc
            assert error is not None
            raise error
        finally:
            unfinished = [task for task in tasks if not task.done()]
            for task in unfinished:
                task.cancel()
            if unfinished:
                await asyncio.gather(*unfinished, return_exceptions=True)

    def _end_leg(self, leg: Leg, st: DataPlaneState) -> None:
        """Release the leg's connection (pooled only when its exchange finished) and report it."""
        if leg.conn is not None:
            leg.conn.release()
        st.pool.end(leg.route.endpoint, self.clock(), leg.rtt, leg.outcome)
        if leg.ticket is not None:
            status = leg.head.status if leg.head is not None else 0
            st.tap.completed(leg.ticket, leg.rtt, leg.outcome is Outcome.OK, status)  # type: ignore[union-attr]

    async def _pump(
        self, request: web.BaseRequest, conn: UpstreamConnection, chunked: bool, limit: int, ex: Exchange
    ) -> None:
        """Stream the request body upstream as it arrives (flow-controlled on both sides)."""
        content = request.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    break
                ex.bytes_in += len(chunk)
                if ex.bytes_in > limit:
                    raise BodyTooLarge(f"request body exceeds {limit} bytes")
                await conn.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            if chunked:
                await conn.write(b"0\r\n\r\n")
            conn.request_done()
        except ProxyError as err:
            conn.abort(err)
        except (ConnectionError, OSError) as exc:
            conn.abort(ClientAborted(f"client went away during the upload: {exc}"))

    def _write_whole(
        self,
        request: web.BaseRequest,
        st: DataPlaneState,
        route: Route,
        head: ResponseHead,
        body: bytes,
        decision: bytes | None = None,
    ) -> web.StreamResponse:
        """Answer a bodiless or small response in one write of the backend's own field block.

        Nothing is decoded or re-encoded: the status line and fields go out as received, minus
        hop-by-hop fields, plus ``Via``. aiohttp only keeps the connection (``WrittenResponse``).
        """
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ClientAborted("client went away before the response")
        keep_alive = request.keep_alive
        version = request.version
        parts = [b"HTTP/1.1 " if version >= (1, 1) else b"HTTP/1.0 ", head.status_text, b"\r\n"]
        block = head.block if head.plain else raw_response_block(head.fields)
        if block:
            parts += (block, b"\r\n")
        parts.append(st.via_line if head.version == b"1.1" else b"Via: 1.0 presage\r\n")
        if st.explain:
            parts += (b"x-presage-backend: ", route.endpoint.id.encode(), b"\r\nx-presage-policy: ",
                      st.policy_name.encode(), b"\r\n")  # fmt: skip
            if decision is not None:
                parts += (b"x-presage-decision: ", decision, b"\r\n")
        if not keep_alive and version >= (1, 1):
            parts.append(b"Connection: close\r\n")
        elif keep_alive and version < (1, 1):
            parts.append(b"Connection: keep-alive\r\n")
        parts += (b"\r\n", body)
        transport.write(b"".join(parts))
        return WrittenResponse(head.status, keep_alive)

    async def _stream(
        self,
        request: web.BaseRequest,
        st: DataPlaneState,
        ex: Exchange,
        route: Route,
        conn: UpstreamConnection,
        head: ResponseHead,
        outcome: Outcome,
    ) -> tuple[web.StreamResponse, Outcome]:
        """A long or open-ended body, copied piece by piece as it arrives (bounded memory)."""
        headers = response_headers(head.fields, f"{head.version.decode()} presage", drop_length=head.chunked)
        if st.explain:
            headers["x-presage-backend"] = route.endpoint.id
            headers["x-presage-policy"] = st.policy_name
            if ex.decision is not None:
                headers["x-presage-decision"] = ex.decision.decode()
        response = ProxyStreamResponse(status=head.status, reason=head.reason, headers=headers)
        ex.response = response
        try:
            await response.prepare(request)
            while chunk := await conn.read():
                await response.write(chunk)
                ex.bytes_out += len(chunk)
            await response.write_eof()
        except ProxyError as err:  # the backend failed mid-body: the client must see a cut, not an end
            ex.reason = err.reason
            _abort_client(request)
            return response, outcome_for(err)
        except ConnectionError:
            ex.reason = "client_abort"
            return response, Outcome.CLIENT_ABORT
        return response, outcome

    # -- WebSocket ------------------------------------------------------------------------------
    async def _websocket(
        self,
        request: web.BaseRequest,
        st: DataPlaneState,
        ex: Exchange,
        rw: RewrittenRequest,
        info: RequestInfo,
    ) -> web.StreamResponse:
        if self.session is None:
            raise NoBackend("WebSocket upgrades are not enabled")
        now = self.clock()
        ep = st.pool.choose(info, self.rng, now, ())
        if ep is None:
            raise NoBackend("no healthy backend")
        route = st.routes[ep.id]
        ex.backend, ex.attempts = ep.id, 1
        st.pool.begin(ep, now)
        outcome, rtt = Outcome.CLIENT_ABORT, 0.0
        try:
            scheme = "wss" if route.origin.ssl is not None else "ws"
            url = f"{scheme}://{route.origin.authority}{request.raw_path}"
            protocols = tuple(
                p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
            )
            upstream = await connect_upstream(
                self.session, url, str_request_headers(rw.block), protocols,
                connect_s=st.connect_s, read_s=st.read_s,
            )  # fmt: skip
            rtt = self.clock() - now
            ex.upstream_status, ex.upstream_s, ex.status = 101, rtt, 101
            outcome = Outcome.OK
            return await bridge(request, upstream)
        except ProxyError as err:
            outcome = outcome_for(err)
            rtt = rtt or self.clock() - now
            raise
        finally:
            st.pool.end(ep, self.clock(), rtt, outcome)

    # -- accounting -----------------------------------------------------------------------------
    def _record(self, request: web.BaseRequest, ex: Exchange) -> None:
        duration = self.clock() - ex.start
        status = ex.status or 500
        route = self.state.routes.get(ex.backend) if ex.backend else None
        counters = route.metrics.requests if route is not None else self.metrics.unrouted
        counters.request(status, "ws" if status == 101 else "http1").inc()
        self.metrics.request_duration_batched.observe(duration)
        log = self.access_log
        if log.enabled and log.wanted(ex.reason is not None or status >= 500):
            log.write(
                {
                    "time": ex.wall,
                    "method": request.method,
                    "path": request.raw_path,
                    "status": status,
                    "duration_s": round(duration, 6),
                    "backend": ex.backend,
                    "upstream_status": ex.upstream_status or None,
                    "upstream_duration_s": round(ex.upstream_s, 6) if ex.upstream_status else None,
                    "bytes_in": ex.bytes_in,
                    "bytes_out": ex.bytes_out,
                    "request_id": ex.request_id,
                    "reason": ex.reason,
                    "attempts": ex.attempts,
                }
            )


def error_response(request: web.BaseRequest, error: ProxyError) -> web.Response:
    response = error.response()
    if request.body_exists and not request.content.is_eof():
        response.force_close()  # an unread body is not worth waiting for: close instead of lingering
    return response


def method_line(method: str, target: bytes) -> bytes:
    return method.encode("ascii") + b" " + target + b" HTTP/1.1\r\n"


async def _stop(task: asyncio.Task[None]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _abort_client(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()
