"""Active HTTP health checks (Envoy ``HttpHealthCheckerImpl``; HAProxy ``option httpchk`` with
``rise``/``fall``).

One task probes every backend concurrently, once per ``interval_s``: ``GET <backend url><path>``
with a ``timeout_s`` deadline. A 2xx or 3xx answer passes (HAProxy's default); any other status,
a connection error or the deadline fails. A backend turns unhealthy after ``unhealthy_threshold``
consecutive failures and healthy again after ``healthy_threshold`` consecutive passes, so one
lost probe does not flap it. Backends start healthy (HAProxy's default), so a fresh proxy serves
at once; passive outlier ejection covers the first seconds.

Transitions are logged and reported to ``on_change(endpoint, healthy)``. The pool notices them by
itself (``Endpoint.healthy`` bumps the endpoint state epoch), so no wiring is required.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp

from .balancer.endpoint import Endpoint

log = logging.getLogger("presage.health")

# Lets backends tell probes from traffic in their own logs (Envoy sends ``user-agent: Envoy/HC``).
PROBE_HEADERS = {"User-Agent": "Presage-HealthCheck"}

ChangeHook = Callable[[Endpoint, bool], None]


@dataclass(frozen=True)
class HealthCheckSettings:
    path: str = "/healthz"
    interval_s: float = 2.0
    timeout_s: float = 1.0
    unhealthy_threshold: int = 2
    healthy_threshold: int = 2
    enabled: bool = True

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError(f"path: must start with '/', got {self.path!r}")
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise ValueError(f"interval_s: must be > 0, got {self.interval_s}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(f"timeout_s: must be > 0, got {self.timeout_s}")
        if self.unhealthy_threshold < 1:
            raise ValueError(f"unhealthy_threshold: must be >= 1, got {self.unhealthy_threshold}")
        if self.healthy_threshold < 1:
            raise ValueError(f"healthy_threshold: must be >= 1, got {self.healthy_threshold}")


class ActiveHealthChecker:
    def __init__(
        self,
        settings: HealthCheckSettings,
        session: aiohttp.ClientSession,
        endpoints_getter: Callable[[], Sequence[Endpoint]],
        clock: Callable[[], float],
        *,
        on_change: ChangeHook | None = None,
    ) -> None:
        self.settings = settings
        self.session = session
        self.endpoints_getter = endpoints_getter
        self.clock = clock
        self.on_change = on_change
        self.rounds = 0
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self._streak: dict[str, int] = {}  # id -> +passes / -failures in a row
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.settings.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="presage-health")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception:  # a failing hook must not end health checking for good
                log.exception("health check round failed")
            await asyncio.sleep(self.settings.interval_s)

    async def check_once(self) -> None:
        """Probe every current backend concurrently and apply the thresholds."""
        endpoints = tuple(self.endpoints_getter())
        results = await asyncio.gather(*(self.probe(ep) for ep in endpoints))
        for ep, passed in zip(endpoints, results, strict=True):
            self._record(ep, passed)
        live = {ep.id for ep in endpoints}
        for gone in self._streak.keys() - live:
            del self._streak[gone]
        self.rounds += 1

    async def probe(self, endpoint: Endpoint) -> bool:
        url = endpoint.url.rstrip("/") + self.settings.path
        try:
            async with self.session.get(
                url, timeout=self._timeout, allow_redirects=False, headers=PROBE_HEADERS
            ) as resp:
                return 200 <= resp.status < 400
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return False

    def _record(self, ep: Endpoint, passed: bool) -> None:
        streak = self._streak.get(ep.id, 0)
        streak = (max(streak, 0) + 1) if passed else (min(streak, 0) - 1)
        self._streak[ep.id] = streak
        s = self.settings
        if ep.healthy and streak <= -s.unhealthy_threshold:
            self._flip(ep, False, -streak)
        elif not ep.healthy and streak >= s.healthy_threshold:
            self._flip(ep, True, streak)

    def _flip(self, ep: Endpoint, healthy: bool, streak: int) -> None:
        ep.healthy = healthy
        state = "healthy" if healthy else "unhealthy"
        log.warning("backend %s is %s after %d consecutive health checks", ep.id, state, streak)
        if self.on_change is not None:
            try:
                self.on_change(ep, healthy)
            except Exception:  # the hook's failure must not skip the other backends' results
                log.exception("health change hook failed for backend %s", ep.id)
