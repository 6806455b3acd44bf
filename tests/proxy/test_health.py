"""Active health checks against real aiohttp servers on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web

from proxy.balancer.endpoint import Endpoint
from proxy.health import ActiveHealthChecker, HealthCheckSettings


class Backend:
    """A real HTTP server whose /healthz status can be switched; it can also hang."""

    def __init__(self) -> None:
        self.status = 200
        self.hang = False
        self.hits: list[float] = []  # arrival times
        self.agents: list[str] = []
        self.release = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def healthz(self, request: web.Request) -> web.Response:
        self.hits.append(time.monotonic())
        self.agents.append(request.headers.get("User-Agent", ""))
        if self.hang:
            await self.release.wait()
        return web.Response(status=self.status, text="ok" if self.status < 400 else "down")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = Backend()
    await b.start()
    yield b
    await b.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def wait_for(condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


FAST = HealthCheckSettings(interval_s=0.05, timeout_s=0.2, unhealthy_threshold=2, healthy_threshold=3)


async def test_thresholds_flip_the_state_and_report_it(
    backend: Backend, session: aiohttp.ClientSession
) -> None:
    ep = Endpoint("b0", backend.url)
    changes: list[tuple[str, bool]] = []
    checker = ActiveHealthChecker(
        FAST, session, lambda: [ep], time.monotonic, on_change=lambda e, h: changes.append((e.id, h))
    )
    backend.status = 500
    await checker.check_once()
    assert ep.healthy  # one failure is not enough
    await checker.check_once()
    assert not ep.healthy
    backend.status = 200
    await checker.check_once()
    await checker.check_once()
    assert not ep.healthy  # two passes of the three required
    await checker.check_once()
    assert ep.healthy
    assert changes == [("b0", False), ("b0", True)]


async def test_a_single_pass_resets_the_failure_streak(
    backend: Backend, session: aiohttp.ClientSession
) -> None:
    ep = Endpoint("b0", backend.url)
    checker = ActiveHealthChecker(FAST, session, lambda: [ep], time.monotonic)
    for status in (500, 200, 500, 200, 500):
        backend.status = status
        await checker.check_once()
    assert ep.healthy


async def test_the_running_task_follows_the_backend(backend: Backend, session: aiohttp.ClientSession) -> None:
    ep = Endpoint("b0", backend.url)
    checker = ActiveHealthChecker(FAST, session, lambda: [ep], time.monotonic)
    await checker.start()
    try:
        backend.status = 500
        await wait_for(lambda: not ep.healthy)
        backend.status = 204
        await wait_for(lambda: ep.healthy)
    finally:
        await checker.stop()
    rounds = checker.rounds
    await asyncio.sleep(0.15)
    assert checker.rounds == rounds  # stopped means stopped


async def test_probes_run_concurrently_and_unreachable_or_slow_backends_fail(
    backend: Backend, session: aiohttp.ClientSession
) -> None:
    hung = [Backend(), Backend()]
    for b in hung:
        await b.start()
        b.hang = True  # answers only after the probe's deadline
    refused = Endpoint("refused", "http://127.0.0.1:1")
    eps = [
        Endpoint("ok", backend.url),
        Endpoint("hung0", hung[0].url),
        Endpoint("hung1", hung[1].url),
        refused,
    ]
    settings = HealthCheckSettings(interval_s=0.05, timeout_s=0.5, unhealthy_threshold=1, healthy_threshold=1)
    checker = ActiveHealthChecker(settings, session, lambda: eps, time.monotonic)
    try:
        await checker.check_once()
    finally:
        for b in hung:
            await b.stop()
    assert [ep.healthy for ep in eps] == [True, False, False, False]
    # probed together: the second hung backend was asked before the first one's deadline passed
    assert abs(hung[0].hits[0] - hung[1].hits[0]) < settings.timeout_s


async def test_the_endpoint_list_is_read_each_round(backend: Backend, session: aiohttp.ClientSession) -> None:
    current = [Endpoint("old", "http://127.0.0.1:1")]
    settings = HealthCheckSettings(unhealthy_threshold=1)
    checker = ActiveHealthChecker(settings, session, lambda: current, time.monotonic)
    await checker.check_once()
    assert not current[0].healthy
    current = [Endpoint("new", backend.url)]
    await checker.check_once()
    assert current[0].healthy and len(backend.hits) == 1


async def test_probes_say_who_they_are(backend: Backend, session: aiohttp.ClientSession) -> None:
    checker = ActiveHealthChecker(FAST, session, lambda: [Endpoint("b0", backend.url + "/")], time.monotonic)
    await checker.check_once()
    assert backend.agents == ["Presage-HealthCheck"]  # and the trailing slash did not double


async def test_a_failing_hook_does_not_stop_the_checks(
    backend: Backend, session: aiohttp.ClientSession
) -> None:
    ep = Endpoint("b0", backend.url)

    def broken_hook(endpoint: Endpoint, healthy: bool) -> None:
        raise RuntimeError("hook failed")

    checker = ActiveHealthChecker(FAST, session, lambda: [ep], time.monotonic, on_change=broken_hook)
    backend.status = 500
    await checker.start()
    try:
        await wait_for(lambda: not ep.healthy)
        backend.status = 200
        await wait_for(lambda: ep.healthy)
    finally:
        await checker.stop()


async def test_disabled_checks_start_nothing(session: aiohttp.ClientSession) -> None:
    checker = ActiveHealthChecker(HealthCheckSettings(enabled=False), session, lambda: [], time.monotonic)
    await checker.start()
    assert checker._task is None
    await checker.stop()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"path": "healthz"}, "path"),
        ({"interval_s": 0.0}, "interval_s"),
        ({"timeout_s": -1.0}, "timeout_s"),
        ({"unhealthy_threshold": 0}, "unhealthy_threshold"),
        ({"healthy_threshold": 0}, "healthy_threshold"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        HealthCheckSettings(**kwargs)  # type: ignore[arg-type]
