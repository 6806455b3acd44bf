"""Prediction-driven hedging (``proxy/hedge.py``) in a running proxy: a real Redis feature store, a
real ONNX bundle, real backends on loopback whose answer times differ per backend. The model picks
``b2`` (shortest predicted queue) with ``b1`` as runner-up; ``b2`` is made slow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import test_predicted_proxy as shared
from aiohttp import web

from proxy.redis_conn import RedisEndpoint

redis_server = shared.redis_server  # the same fixtures: an embedded Redis, vectors as agents write them
push = shared.push
RELAXED, metric, model_json = shared.RELAXED, shared.metric, shared.model_json
QUEUES = {"b1": 10.0, "b2": 0.0, "b3": 15.0}  # the model's order: b2, then b1, then b3


class Timed:
    """A backend that answers ``/work`` after ``delay_s`` and notes requests cut short."""

    def __init__(self, name: str, delay_s: float) -> None:
        self.name = name
        self.delay_s = delay_s
        self.served = 0
        self.cancelled = 0
        self.cut_off = asyncio.Event()

    def app(self) -> web.Application:
        async def work(request: web.Request) -> web.Response:
            try:
                await asyncio.sleep(self.delay_s)
            except asyncio.CancelledError:  # aiohttp cancels a handler whose client went away
                self.cancelled += 1
                self.cut_off.set()
                raise
            self.served += 1
            return web.Response(text=self.name, headers={"X-Backend": self.name})

        async def healthz(_: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application(handler_args={"handler_cancellation": True})
        app.router.add_route("*", "/work", work)
        app.router.add_get("/healthz", healthz)
        return app


@pytest.fixture
async def timed() -> AsyncIterator[
    Callable[[dict[str, float]], Awaitable[tuple[list[str], dict[str, Timed]]]]
]:
    runners: list[web.AppRunner] = []

    async def start(delays: dict[str, float]) -> tuple[list[str], dict[str, Timed]]:
        urls, backends = [], {}
        for name, delay in delays.items():
            backend = Timed(name, delay)
            runner = web.AppRunner(backend.app())
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            runners.append(runner)
            urls.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
            backends[name] = backend
        return urls, backends

    yield start  # type: ignore[misc]
    for runner in runners:
        await runner.cleanup()


async def hedged_proxy(
    proxy: Any, urls: list[str], redis: RedisEndpoint, model: Path, predicted: dict[str, Any] | None = None,
    **hedge: Any,
) -> Any:
    return await proxy(
        urls, policy="predicted", model=str(model), redis=redis.url, explain_header=True,
        predicted={"choices": 0, **RELAXED, **(predicted or {})},
        hedge={"after": 2.0, "min_delay_s": 0.05, **hedge},
    )  # fmt: skip


async def test_a_slow_choice_is_hedged_to_the_runner_up_which_answers(
    redis_server: RedisEndpoint, proxy: Any, timed: Any, push: Any, queue_model_dir: Path, client: Any
) -> None:
    urls, backends = await timed({"b1": 0.0, "b2": 3.0, "b3": 0.0})
    push(QUEUES)
    p = await hedged_proxy(proxy, urls, redis_server, queue_model_dir)
    async with client.get(p.url + "/work") as resp:
        assert resp.status == 200
        assert await resp.text() == "b1"
        assert resp.headers["x-presage-backend"] == "b1"
        assert "runner_up=b1" in resp.headers["x-presage-decision"]  # the decision was for b2
    assert await metric(client, p.admin, 'presage_hedges_total{result="sent"}') == 1
    assert await metric(client, p.admin, 'presage_hedges_total{result="won"}') == 1

    await asyncio.wait_for(backends["b2"].cut_off.wait(), 5.0)  # the losing copy's connection was closed
    assert backends["b2"].served == 0
    # both copies' in-flight counts are settled: nothing left in flight at the pool
    async with client.get(p.admin + "/v1/backends") as resp:
        states = {b["id"]: b for b in (await resp.json())["backends"]}
    assert all(b["in_flight"] == 0 for b in states.values())


async def test_a_fast_choice_is_never_copied(
    redis_server: RedisEndpoint, proxy: Any, timed: Any, push: Any, queue_model_dir: Path, client: Any
) -> None:
    urls, backends = await timed({"b1": 0.0, "b2": 0.0, "b3": 0.0})
    push(QUEUES)
    p = await hedged_proxy(proxy, urls, redis_server, queue_model_dir)
    for _ in range(10):
        async with client.get(p.url + "/work") as resp:
            assert await resp.text() == "b2"
    assert await metric(client, p.admin, 'presage_hedges_total{result="sent"}') == 0
    assert backends["b1"].served == 0


async def test_only_idempotent_requests_are_hedged_and_copies_come_out_of_a_budget(
    redis_server: RedisEndpoint, proxy: Any, timed: Any, push: Any, queue_model_dir: Path, client: Any
) -> None:
    urls, _ = await timed({"b1": 0.0, "b2": 0.3, "b3": 0.0})
    push(QUEUES)
    # 34%: a copy costs the deposits of three requests (ceil(100/34) = 2.94), and there is no reserve
    p = await hedged_proxy(proxy, urls, redis_server, queue_model_dir, budget_percent=34.0, min_per_s=0.0)
    async with client.post(p.url + "/work", data=b"x") as resp:
        assert await resp.text() == "b2"  # a POST may not run twice
    async with client.get(p.url + "/work") as resp:
        assert await resp.text() == "b2"  # eligible, but two deposits do not pay for a copy
    async with client.get(p.url + "/work") as resp:
        assert await resp.text() == "b1"  # three do
    assert await metric(client, p.admin, 'presage_hedges_total{result="denied"}') == 1
    assert await metric(client, p.admin, 'presage_hedges_total{result="sent"}') == 1


def predicted_ms(resp: Any) -> float:
    parts = dict(p.split("=", 1) for p in resp.headers["x-presage-decision"].split("; "))
    return float(parts["predicted_ms"])


async def test_the_hedge_delay_follows_the_live_level_of_the_predictions(
    redis_server: RedisEndpoint, proxy: Any, timed: Any, push: Any, queue_model_dir: Path, client: Any
) -> None:
    """b2 answers in 15 ms, several times the ~2 ms the model predicts for it: at the bundle's level
    the hedge fires after 3 x 2 ms, before b2 answers, and a copy goes to b1 (slower still, so b2
    wins). Once the proxy has refitted the level on five answers, 3 x the prediction is ~45 ms and
    no copy goes out; the choice stays b2."""
    urls, _ = await timed({"b1": 0.1, "b2": 0.015, "b3": 0.1})
    push(QUEUES)
    # (the accuracy safeguard off: the first answers' errors at the bundle's level would trip it)
    refit_after_five = {"min_observations": 5, "calibration_window": 5, "min_accuracy": 0.0}
    p = await hedged_proxy(
        proxy, urls, redis_server, queue_model_dir, predicted=refit_after_five,
        after=3.0, min_delay_s=0.001, budget_percent=100.0, min_per_s=100.0,
    )  # fmt: skip
    first = []
    for _ in range(5):
        async with client.get(p.url + "/work") as resp:
            assert await resp.text() == "b2"  # the copy to b1 answers later: the first answer wins
            first.append(predicted_ms(resp))
    assert await metric(client, p.admin, 'presage_hedges_total{result="sent"}') == 5
    assert max(first) < 5.0  # the bundle's level: well under the 15 ms b2 takes
    info = await model_json(client, p.admin)  # reading it applies the pending feedback, as the 1 Hz sync does
    assert 3.0 < info["predicted"]["calibration_scale"] < 10.0
    for _ in range(5):
        async with client.get(p.url + "/work") as resp:
            assert await resp.text() == "b2"
            assert 10.0 < predicted_ms(resp) < 40.0  # the refitted level: what b2 takes
    assert await metric(client, p.admin, 'presage_hedges_total{result="sent"}') == 5  # no copy since
