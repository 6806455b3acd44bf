"""``drain.wait_idle`` against real aiohttp servers on loopback that report an in-flight gauge."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from loadtest.bench.drain import in_flight, wait_idle


def test_reads_the_gauge_and_nothing_else() -> None:
    page = (
        "# HELP presage_backend_in_flight_total x\npresage_backend_in_flight_total 9\n"
        "presage_backend_in_flight 3\npresage_backend_queue_length 1\n"
    )
    assert in_flight(page) == 3.0
    assert in_flight("presage_backend_queue_length 1\n") is None


@pytest.fixture
async def gauge_server() -> AsyncIterator[Callable[[list[float]], str]]:
    """A backend whose successive /metrics pages report the given in-flight values (then the last)."""
    runners: list[web.AppRunner] = []

    async def start(values: list[float]) -> str:
        left = list(values)

        async def metrics(_: web.Request) -> web.Response:
            n = left.pop(0) if len(left) > 1 else left[0]
            return web.Response(text=f"presage_backend_in_flight {n}\n")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start  # type: ignore[misc]
    for runner in runners:
        await runner.cleanup()


async def test_waits_until_every_backend_is_idle(gauge_server) -> None:  # type: ignore[no-untyped-def]
    busy = await gauge_server([4, 2, 1, 0])
    idle = await gauge_server([0])
    state = await wait_idle([("b1", busy), ("b2", idle)], timeout_s=10.0, poll_s=0.01)
    assert state["idle"] is True
    assert state["busy_at_start"] == {"b1": 4.0} and state["busy_at_end"] == {}


async def test_gives_up_at_the_timeout_and_says_what_was_left(gauge_server) -> None:  # type: ignore[no-untyped-def]
    stuck = await gauge_server([5])
    state = await wait_idle([("b1", stuck), ("gone", "http://127.0.0.1:9")], timeout_s=0.2, poll_s=0.02)
    assert state["idle"] is False and state["busy_at_end"] == {"b1": 5.0}
    assert 0.2 <= float(state["waited_s"]) < 5.0  # type: ignore[arg-type]
