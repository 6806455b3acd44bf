"""One worker: the data-plane listener, the admin listener, and their shared lifecycle.

Long-lived resources are entered once, in order, through the admin application's
``cleanup_ctx`` (aiohttp), and closed in reverse:

1. the ``ClientSession`` (WebSocket upgrades, health checks) and the upstream connection pools;
2. the backend set and the data plane (access log opened here);
3. active health checks;
4. the 1 Hz task that copies per-backend state into gauges (never done per request).

Reload (SIGHUP): the config is read again from the same file, environment and flags; a new
``DataPlaneState`` is built beside the running one and swapped in with one assignment, so a
request sees either the old state or the new one, never a mix. Any error keeps the old config
and is counted in ``presage_config_reloads_total{result="error"}``. Endpoints keep their identity
(and so their in-flight count and peak-EWMA) across reloads. ``listen``, ``admin`` and
``workers`` need a restart.

Stop (SIGTERM/SIGINT): ``/readyz`` turns 503, the worker waits ``drain_delay_s`` so that load
balancers notice, closes the listener, lets in-flight requests finish for up to ``grace_s``,
then closes everything else and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import random
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

from .accesslog import AccessLog
from .admin import make_admin_app
from .balancer.base import Policy
from .balancer.endpoint import Endpoint
from .balancer.registry import make_policy
from .config import ConfigError, ProxyConfig
from .dataplane import DataPlane, DataPlaneState, Route
from .errors import ProxyError
from .headers import ForwardingPolicy
from .health import ActiveHealthChecker
from .metrics import BackendMetrics, Metrics
from .pool import BackendPool
from .predict.wants import needs_runtime

if TYPE_CHECKING:
    from .predict.runtime import PredictionRuntime
from .hedge import HedgeMetrics
from .retry_budget import RetryBudget
from .server import ProxyServer
from .tasks import cancel_and_wait
from .upstream import UpstreamPool

log = logging.getLogger("presage.app")

PolicyFactory = Callable[[ProxyConfig], Policy]


def default_policy(config: ProxyConfig) -> Policy:
    return make_policy(config.policy)


RESTART_ONLY = ("listen", "admin", "workers")
SYNC_INTERVAL_S = 1.0
RUNNER_SHUTDOWN_S = 0.5  # aiohttp waits this twice: for handlers to end, then after cancelling them


class Worker:
    """The data plane and admin API of one process."""

    def __init__(
        self,
        config: ProxyConfig,
        *,
        reload_config: Callable[[], ProxyConfig] | None = None,
        reuse_port: bool = False,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        policy_factory: PolicyFactory | None = None,
    ) -> None:
        self.config = config
        self.reload_config = reload_config
        self.reuse_port = reuse_port
        self.rng = rng or random.Random()
        self.clock = clock
        # Builds the policy for a config (and again on each reload); the default covers every
        # policy that needs no outside state. A policy with runtime inputs (a model, a feature
        # store) is built by a factory that closes over them.
        self.policy_factory: PolicyFactory | None = policy_factory
        # feature store, model, recorder: only for configs that predict, shadow, explore or record
        self.prediction: PredictionRuntime | None = None
        self.metrics = Metrics()
        self._hedge_metrics: HedgeMetrics | None = None  # registered once, when hedging is first on
        self.session: ClientSession | None = None
        self.upstream: UpstreamPool | None = None
        self.dataplane: DataPlane | None = None
        self.health: ActiveHealthChecker | None = None
        self.access_log = AccessLog(None)
        self.listen_port = 0
        self.admin_port = 0
        self._draining = False
        self._backend_metrics: dict[str, BackendMetrics] = {}
        self._ejections_seen: dict[str, int] = {}
        self._reload_ok = self.metrics.config_reloads.labels("success")
        self._reload_failed = self.metrics.config_reloads.labels("error")
        self._reload_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._admin_runner: web.AppRunner | None = None
        self._data_runner: web.ServerRunner | None = None

    # -- AdminView ------------------------------------------------------------------------------
    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def state(self) -> DataPlaneState:
        assert self.dataplane is not None, "worker not started"
        return self.dataplane.state

    def backends_json(self) -> dict[str, Any]:
        state = self.state
        rows = state.pool.snapshot_json(self.clock())
        snap = self.prediction.snapshot if self.prediction is not None else None
        if snap is not None:
            features = snap.describe(time.time())
            for row in rows:
                row["features"] = features.get(str(row.get("id")))
        return {"policy": state.policy_name, "backends": rows}

    def model_json(self) -> dict[str, Any]:
        if self.prediction is None:
            return {"policy": self.config.policy, "prediction": None}
        return self.prediction.describe()

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        app = make_admin_app(self)
        app.cleanup_ctx.extend(
            [self._clients_ctx, self._prediction_ctx, self._dataplane_ctx, self._health_ctx, self._sync_ctx]
        )
        self._admin_runner = web.AppRunner(app, access_log=None)
        try:
            await self._admin_runner.setup()
            assert self.dataplane is not None
            server = ProxyServer(self.dataplane.handle, on_rejected=self._rejected)
            # in-flight requests get grace_s in stop(); the runner's own wait only covers stragglers
            self._data_runner = web.ServerRunner(server, shutdown_timeout=RUNNER_SHUTDOWN_S)
            await self._data_runner.setup()
            self.listen_port = await self._bind(
                self._data_runner, self.config.listen.host, self.config.listen.port
            )
            self.admin_port = await self._bind(
                self._admin_runner, self.config.admin.host, self.config.admin.port
            )
        except BaseException:
            await self._cleanup()
            raise
        log.info(
            "presage proxy listening on %s:%d (admin %s:%d), policy %s, %d backends",
            self.config.listen.host, self.listen_port, self.config.admin.host, self.admin_port,
            self.config.policy, len(self.config.backends),
        )  # fmt: skip

    async def _bind(self, runner: web.BaseRunner, host: str, port: int) -> int:
        site = web.TCPSite(runner, host, port, reuse_port=self.reuse_port or None, backlog=1024)
        await site.start()
        return int(runner.addresses[-1][1])

    async def stop(self) -> None:
        """Drain: readyz 503, wait ``drain_delay_s``, stop accepting, finish in-flight, close."""
        if self._draining:
            return
        self._draining = True
        config = self.config
        if config.drain_delay_s > 0:
            log.info("draining: /readyz is 503 for %.1fs before the listener closes", config.drain_delay_s)
            await asyncio.sleep(config.drain_delay_s)
        if self._data_runner is not None:
            for site in list(self._data_runner.sites):
                await site.stop()  # stop accepting; open connections keep being served
        if self.dataplane is not None and self.dataplane.in_flight:
            log.info(
                "listener closed; %d requests in flight, up to %.1fs to finish",
                self.dataplane.in_flight, config.grace_s,
            )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.dataplane.idle(), config.grace_s)
        await self._cleanup()
        self.metrics.flush()  # with several workers the values outlive this process
        log.info("stopped")

    async def _cleanup(self) -> None:
        if self._data_runner is not None:
            await self._data_runner.cleanup()
            self._data_runner = None
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
            self._admin_runner = None

    async def serve(self, *, freeze_heap: bool = False) -> int:
        """Run until SIGTERM/SIGINT; SIGHUP reloads. Returns the exit code.

        ``freeze_heap`` (a worker process's entry point sets it): once started, move every object
        alive so far (modules, onnxruntime and numpy, the model, the config) into the collector's
        permanent generation (``gc.freeze``). They live as long as the process, and without this
        each full collection walks them all: one took 14-23 ms in a worker that had loaded them
        (timed with ``gc.callbacks``), a pause for every request in flight when it comes."""
        await self.start()
        if freeze_heap:
            gc.collect()  # what start-up left as garbage goes now, not into the frozen set
            gc.freeze()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        try:
            await self._stop.wait()
        finally:
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.stop()
        return 0

    def request_stop(self) -> None:
        self._stop.set()

    # -- cleanup_ctx stages ---------------------------------------------------------------------
    async def _clients_ctx(self, app: web.Application) -> AsyncIterator[None]:
        config = self.config
        self.session = ClientSession(
            connector=TCPConnector(limit=0, limit_per_host=config.max_connections_per_backend),
            timeout=ClientTimeout(
                total=None, sock_connect=config.timeouts.connect_s, sock_read=config.timeouts.read_s
            ),
            auto_decompress=False,
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        )
        self.upstream = UpstreamPool(limit_per_backend=config.max_connections_per_backend)
        self.upstream.start()
        try:
            yield
        finally:
            await self.upstream.close()
            await self.session.close()

    async def _prediction_ctx(self, app: web.Application) -> AsyncIterator[None]:
        if self.policy_factory is None and needs_runtime(self.config):
            from .predict.runtime import PredictionRuntime

            self.prediction = PredictionRuntime(self.config, self.metrics, rng=random.Random())
            try:
                await self.prediction.start()
            except BaseException:
                await self.prediction.stop()
                raise
        try:
            yield
        finally:
            if self.prediction is not None:
                await self.prediction.stop()

    async def _dataplane_ctx(self, app: web.Application) -> AsyncIterator[None]:
        self.access_log = AccessLog(self.config.access_log.path, self.config.access_log.sample)
        await self.access_log.start()
        state = self.build_state(self.config, None)
        self.dataplane = DataPlane(
            state,
            metrics=self.metrics,
            access_log=self.access_log,
            session=self.session,
            rng=self.rng,
            clock=self.clock,
        )
        try:
            yield
        finally:
            await self.access_log.stop()

    async def _health_ctx(self, app: web.Application) -> AsyncIterator[None]:
        await self._start_health(self.config)
        try:
            yield
        finally:
            if self.health is not None:
                await self.health.stop()

    async def _sync_ctx(self, app: web.Application) -> AsyncIterator[None]:
        self.sync_gauges()
        task = asyncio.create_task(self._sync_loop(), name="presage-gauges")
        try:
            yield
        finally:
            await cancel_and_wait(task)

    async def _start_health(self, config: ProxyConfig) -> None:
        assert self.session is not None
        self.health = ActiveHealthChecker(
            config.health, self.session, lambda: self.state.pool.endpoints, self.clock
        )
        await self.health.start()

    # -- state ----------------------------------------------------------------------------------
    def build_state(self, config: ProxyConfig, previous: DataPlaneState | None) -> DataPlaneState:
        """A complete new state; nothing running is touched until the caller swaps it in."""
        assert self.upstream is not None
        tap = None
        if self.policy_factory is not None:
            policy = self.policy_factory(config)
        elif self.prediction is not None:
            policy, tap = self.prediction.policy_for(config)
        elif needs_runtime(config):
            raise ConfigError("policy", "predicted, shadow, explore and record need a restart to turn on")
        else:
            policy = default_policy(config)
        pool = self._build_pool(config, previous, policy)
        routes = {ep.id: self._route(ep) for ep in pool.endpoints}
        return DataPlaneState(
            pool=pool,
            routes=routes,
            policy_name=config.policy,
            forwarding=ForwardingPolicy(config.trusted_hops, config.forwarded_header),
            retry_budget=previous.retry_budget
            if previous and self.config.retry == config.retry
            else RetryBudget(config.retry),
            retries=config.retry.attempts - 1,
            connect_s=config.timeouts.connect_s,
            read_s=config.timeouts.read_s,
            total_s=config.timeouts.total_s,
            max_body_bytes=config.max_body_bytes,
            class_from=config.class_from,
            explain=config.explain_header,
            tap=tap,
            **self._hedging(config, previous),
        )

    def _hedging(self, config: ProxyConfig, previous: DataPlaneState | None) -> dict[str, Any]:
        """The hedge settings, budget (kept across a reload that keeps the settings) and counters."""
        if not config.hedge.enabled:
            return {}
        budget = (
            previous.hedge_budget
            if previous is not None and previous.hedge == config.hedge and previous.hedge_budget is not None
            else config.hedge.budget()
        )
        if self._hedge_metrics is None:
            self._hedge_metrics = HedgeMetrics(self.metrics.registry)
        return {"hedge": config.hedge, "hedge_budget": budget, "hedge_metrics": self._hedge_metrics}

    def _build_pool(
        self, config: ProxyConfig, previous: DataPlaneState | None, policy: Policy
    ) -> BackendPool:
        old = {ep.id: ep for ep in previous.pool.endpoints} if previous else {}
        endpoints = []
        for spec in config.backends:
            ep = old.get(spec.id)
            if ep is None or ep.url != spec.url:
                ep = Endpoint(spec.id, spec.url, spec.weight, decay_s=config.ewma_decay_s)
            else:  # the live endpoint keeps its in-flight count, peak-EWMA and ejection state
                ep.weight = spec.weight
                ep.decay_s = config.ewma_decay_s
            endpoints.append(ep)
        return BackendPool(
            endpoints,
            policy,
            outlier=config.outlier,
            panic_threshold_percent=config.panic_threshold_percent,
            clock=self.clock,
        )

    def _route(self, ep: Endpoint) -> Route:
        assert self.upstream is not None
        origin = self.upstream.origin(ep.url)
        return Route(
            endpoint=ep,
            origin=origin,
            host=b"Host: " + origin.authority.encode("idna") + b"\r\n",
            metrics=self.backend_metrics(ep.id),
        )

    def backend_metrics(self, backend: str) -> BackendMetrics:
        children = self._backend_metrics.get(backend)
        if children is None:
            children = self._backend_metrics[backend] = self.metrics.for_backend(backend)
        return children

    # -- reload ---------------------------------------------------------------------------------
    def request_reload(self) -> None:
        asyncio.get_running_loop().create_task(self.reload(), name="presage-reload")

    async def reload(self) -> bool:
        """Re-read the config and swap it in; on any error keep the running one."""
        async with self._reload_lock:
            if self.reload_config is None:
                return False
            try:
                new = self.reload_config()
                await self.apply(new)
            except (ConfigError, ValueError, TypeError, OSError) as exc:
                self._reload_failed.inc()
                log.error("config reload failed, keeping the running config: %s", exc)
                return False
            self._reload_ok.inc()
            log.info("config reloaded: policy %s, %d backends", new.policy, len(new.backends))
            return True

    async def apply(self, new: ProxyConfig) -> None:
        old = self.config
        fixed = [key for key in RESTART_ONLY if getattr(new, key) != getattr(old, key)]
        if fixed:
            log.warning(
                "config: %s cannot change without a restart; keeping the running values", ", ".join(fixed)
            )
            new = dataclasses.replace(new, **{key: getattr(old, key) for key in fixed})
        assert self.dataplane is not None and self.upstream is not None
        state = self.build_state(new, self.dataplane.state)
        access_log = None
        if new.access_log != old.access_log or new.access_log.path not in (None, "-"):
            access_log = AccessLog(new.access_log.path, new.access_log.sample)
            await access_log.start()  # reopened on every reload, so log rotation works
        # -- the swap: nothing below can fail on bad input --
        self.config = new
        self.dataplane.state = state
        if access_log is not None:
            previous_log, self.access_log = self.access_log, access_log
            self.dataplane.access_log = access_log
            await previous_log.stop()
        self._forget_removed(old, new)
        if self.prediction is not None:
            self.prediction.backends_changed(new)
        self.upstream.set_limit(new.max_connections_per_backend)
        if new.health != old.health:
            if self.health is not None:
                await self.health.stop()
            await self._start_health(new)
        self.sync_gauges()

    def _forget_removed(self, old: ProxyConfig, new: ProxyConfig) -> None:
        kept = {b.id for b in new.backends}
        for spec in old.backends:
            if spec.id not in kept:
                self.metrics.forget_backend(spec.id, self._backend_metrics.pop(spec.id, None))
                self._ejections_seen.pop(spec.id, None)
        assert self.upstream is not None
        self.upstream.retain({b.url for b in new.backends})

    # -- gauges ---------------------------------------------------------------------------------
    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            self.sync_gauges()

    def sync_gauges(self) -> None:
        """Copy live per-backend state into the gauges and flush batched metrics (1 Hz)."""
        if self.prediction is not None:
            self.prediction.sync()
        self.metrics.flush()
        if self.dataplane is None:
            return
        for row in self.state.pool.snapshot_json(self.clock()):
            backend = str(row.get("id"))
            children = self.backend_metrics(backend)
            children.in_flight.set(float(row.get("in_flight", 0)))
            children.up.set(1.0 if row.get("healthy", True) else 0.0)
            children.ejected.set(1.0 if row.get("ejected", False) else 0.0)
            ejections = int(row.get("ejections", 0))
            seen = self._ejections_seen.get(backend, 0)
            if ejections > seen:
                children.ejections.inc(ejections - seen)
            self._ejections_seen[backend] = ejections

    def _rejected(self, request: web.BaseRequest, error: ProxyError) -> None:
        """A request the HTTP parser refused: count and log it like any other."""
        self.metrics.unrouted.request(error.status, "http1").inc()
        if self.access_log.wanted(True):
            self.access_log.write(
                {
                    "time": time.time(),
                    "method": None,
                    "path": None,
                    "status": error.status,
                    "duration_s": 0.0,
                    "backend": None,
                    "peer": request.remote,
                    "reason": error.reason,
                    "detail": error.detail,
                }
            )


def install_uvloop() -> bool:
    """Use uvloop when it is installed (it roughly halves the event loop's per-request cost)."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return True
    return False


def run_worker(
    config: ProxyConfig, reload_config: Callable[[], ProxyConfig] | None, *, reuse_port: bool = False
) -> int:
    """Run one worker in this process until it is told to stop; returns the exit code."""
    install_uvloop()

    async def main() -> int:
        worker = Worker(config, reload_config=reload_config, reuse_port=reuse_port)
        return await worker.serve(freeze_heap=True)

    try:
        return asyncio.run(main())
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
