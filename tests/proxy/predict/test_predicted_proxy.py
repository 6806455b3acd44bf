"""The ``predicted`` policy inside a running proxy: a real Redis feature store, a real ONNX bundle,
real backends on loopback. Feature vectors are written in the agents' wire format
(``metrics_agent.schema``), the model is hot-reloaded through Redis, shadow mode and recording run
through the data plane."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis
from predict_fixtures import write_queue_model

from metrics_agent import schema
from predictor_runtime.bundle import load_bundle
from proxy.redis_conn import RedisEndpoint, start_embedded, sync_client


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisEndpoint]:
    with start_embedded(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def push(redis_server: RedisEndpoint) -> Iterator[Callable[[dict[str, float]], None]]:
    """Write one vector per backend as an agent would: ``{backend: app_queue_length}``."""
    client = sync_client(redis_server.url)
    names = schema.feature_names(schema.DEFAULT_WINDOWS)
    col = names.index("app_queue_length")
    seq = [0]

    def write(queues: dict[str, float]) -> None:
        seq[0] += 1
        for backend, queue in queues.items():
            values = [0.0] * len(names)
            values[col] = queue
            vec = schema.FeatureVector(backend, seq[0], time.time(), schema.DEFAULT_WINDOWS, tuple(values))
            client.set(schema.vector_key(backend), schema.encode(vec), ex=30)
            client.publish(schema.updates_channel(), backend)

    yield write
    client.close()


# Loopback RTTs are ~1 ms, so the default decision budget (1% of the RTT, at least 50 us) would
# trip the decision-time breaker on a busy test machine; tests that are not about it relax it.
RELAXED = {"min_budget_s": 0.01}


async def get_many(client: aiohttp.ClientSession, url: str, n: int) -> list[aiohttp.ClientResponse]:
    out = []
    for _ in range(n):
        async with client.get(url + "/headers") as resp:
            await resp.read()
            assert resp.status == 200
            out.append(resp)
    return out


async def metric(client: aiohttp.ClientSession, admin: str, line_start: str) -> float:
    async with client.get(admin + "/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(line_start):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def model_json(client: aiohttp.ClientSession, admin: str) -> dict[str, Any]:
    async with client.get(admin + "/v1/model") as resp:
        return orjson.loads(await resp.read())  # type: ignore[no-any-return]


async def wait_for(check: Callable[[], Any], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def three(backends: Any) -> AsyncIterator[list[str]]:
    yield [b.url for b in await backends(3)]


async def test_routes_to_the_shortest_predicted_queue_and_explains_why(
    redis_server: RedisEndpoint, proxy: Any, three: list[str], push: Any, queue_model_dir: Path, client: Any
) -> None:
    push({"b1": 10.0, "b2": 0.0, "b3": 15.0})
    p = await proxy(
        three, policy="predicted", model=str(queue_model_dir), redis=redis_server.url,
        explain_header=True, predicted={"choices": 0, **RELAXED},
    )  # fmt: skip
    responses = await get_many(client, p.url, 20)
    assert {r.headers["x-presage-backend"] for r in responses} == {"b2"}
    decision = responses[-1].headers["x-presage-decision"]
    assert "reason=model" in decision and "predicted_ms=" in decision and "runner_up=b1" in decision
    info = await model_json(client, p.admin)
    assert info["model"]["loaded"] is True
    assert info["model"]["version"] == load_bundle(queue_model_dir).sha256
    assert info["predicted"]["observations"] == 20
    p.worker.sync_gauges()
    assert await metric(client, p.admin, "presage_decision_duration_seconds_count") == 20
    assert await metric(client, p.admin, "presage_prediction_error_ratio_count") == 20
    # the store turns what the agents say into routing: b2 now has the longest queue
    push({"b1": 0.0, "b2": 18.0, "b3": 15.0})

    async def moved() -> bool:
        async with client.get(p.url + "/headers") as resp:
            await resp.read()
            return resp.headers["x-presage-backend"] == "b1"

    await wait_for(moved)


async def test_an_agent_update_is_scored_before_the_next_request_needs_it(
    redis_server: RedisEndpoint, proxy: Any, three: list[str], push: Any, queue_model_dir: Path, client: Any
) -> None:
    push({"b1": 10.0, "b2": 0.0, "b3": 15.0})
    p = await proxy(
        three, policy="predicted", model=str(queue_model_dir), redis=redis_server.url,
        explain_header=True, predicted={"choices": 0, **RELAXED},
    )  # fmt: skip
    await get_many(client, p.url, 5)  # the first request of its kind scores and keeps a table
    runtime = p.worker.prediction
    push({"b1": 0.0, "b2": 18.0, "b3": 15.0})  # two rows change

    async def published() -> bool:
        snap = runtime.snapshot
        col = snap.names.index("app_queue_length")
        return [float(snap.matrix[snap.index[b], col]) for b in ("b1", "b2", "b3")] == [0.0, 18.0, 15.0]

    await wait_for(published)
    hits = (await model_json(client, p.admin))["predicted"]["table_hits"]
    responses = await get_many(client, p.url, 1)
    assert responses[0].headers["x-presage-backend"] == "b1"  # the update routes at once ...
    # ... from predictions scored when the snapshot arrived, not by the request
    assert (await model_json(client, p.admin))["predicted"]["table_hits"] == hits + 1


async def test_without_fresh_features_it_falls_back_and_counts_why(
    redis_server: RedisEndpoint, proxy: Any, three: list[str], queue_model_dir: Path, client: Any
) -> None:
    p = await proxy(
        three,
        policy="predicted",
        model=str(queue_model_dir),
        redis=redis_server.url,
        explain_header=True,
        predicted=RELAXED,
    )
    responses = await get_many(client, p.url, 12)
    assert all(r.headers["x-presage-decision"] == "reason=fallback:stale" for r in responses)
    p.worker.sync_gauges()
    assert await metric(client, p.admin, 'presage_fallbacks_total{reason="stale"}') == 12


async def test_without_a_model_it_serves_by_peak_ewma(
    redis_server: RedisEndpoint, proxy: Any, three: list[str], push: Any, client: Any
) -> None:
    push({"b1": 1.0, "b2": 1.0, "b3": 1.0})
    p = await proxy(three, policy="predicted", redis=redis_server.url)
    await get_many(client, p.url, 5)
    assert await metric(client, p.admin, 'presage_fallbacks_total{reason="no_model"}') == 5


async def test_hot_reload_through_redis_refuses_a_bad_bundle_and_keeps_serving(
    redis_server: RedisEndpoint, proxy: Any, three: list[str], push: Any, queue_model_dir: Path,
    client: Any, tmp_path: Path,
) -> None:  # fmt: skip
    push({"b1": 10.0, "b2": 0.0, "b3": 15.0})
    r = redis.Redis(unix_socket_path=redis_server.url.removeprefix("unix://"))
    r.set("presage:model:path", str(queue_model_dir))
    p = await proxy(
        three, policy="predicted", redis=redis_server.url,
        predicted={"choices": 0, "reload_interval_s": 0.1, **RELAXED},
    )  # fmt: skip
    first = (await model_json(client, p.admin))["model"]
    assert first["loaded"] and first["path"] == str(queue_model_dir)
    bad = tmp_path / "bad"
    shutil.copytree(queue_model_dir, bad)
    (bad / "model.onnx").write_bytes(b"not a model")
    r.set("presage:model:path", str(bad))

    async def refused() -> bool:
        return bool((await model_json(client, p.admin))["model"]["loads_failed"] == 1)

    await wait_for(refused)
    info = (await model_json(client, p.admin))["model"]
    assert info["version"] == first["version"] and "sha256" in info["last_error"]
    responses = await get_many(client, p.url, 5)  # the old model still routes
    assert await metric(client, p.admin, "presage_fallbacks_total") == 0 and len(responses) == 5
    newer = write_queue_model(tmp_path / "newer", seed=1)
    r.set("presage:model:path", str(newer))

    async def swapped() -> bool:
        return bool((await model_json(client, p.admin))["model"]["version"] != first["version"])

    await wait_for(swapped)
    r.close()


async def test_shadow_mode_routes_by_the_live_policy_and_scores_the_model(
    redis_server: RedisEndpoint, proxy: Any, three: list[str], push: Any, queue_model_dir: Path, client: Any
) -> None:
    push({"b1": 10.0, "b2": 0.0, "b3": 15.0})
    p = await proxy(
        three,
        policy="round_robin",
        shadow="predicted",
        model=str(queue_model_dir),
        redis=redis_server.url,
        predicted=RELAXED,
    )
    responses = await get_many(client, p.url, 30)
    assert {r.headers.get("x-presage-backend") for r in responses} == {None}  # explain is off
    p.worker.sync_gauges()
    async with client.get(p.admin + "/v1/backends") as resp:
        rows = orjson.loads(await resp.read())["backends"]
    assert {row["id"]: row["features"]["stale"] for row in rows} == {"b1": False, "b2": False, "b3": False}
    info = await model_json(client, p.admin)
    assert info["shadow"]["observations"] == 30  # every live choice was scored by the shadow
    assert info["shadow"]["decisions"] == 30
    assert 0.2 < info["shadow"]["agreement"] < 0.5  # round robin agrees with "always b2" a third of the time
    assert await metric(client, p.admin, 'presage_shadow_choices_total{backend="b2"}') == 30
    assert await metric(client, p.admin, "presage_fallbacks_total") == 0  # the shadow's never count as live


async def test_recording_with_exploration_writes_trainable_samples(
    redis_server: RedisEndpoint, proxy: Any, three: list[str], push: Any, client: Any, tmp_path: Path
) -> None:
    push({"b1": 3.0, "b2": 0.0, "b3": 7.0})
    record = tmp_path / "samples.jsonl"
    p = await proxy(
        three, policy="peak_ewma", redis=redis_server.url, record=str(record), explore=0.5,
        record_stream="presage:samples", class_from="query:size",
    )  # fmt: skip
    for i in range(40):
        async with client.get(p.url + f"/headers?size={64 * (1 + i % 3)}") as resp:
            await resp.read()
    await p.worker.prediction.recorder.flush()  # type: ignore[union-attr]
    lines = [orjson.loads(line) for line in record.read_bytes().splitlines()]
    assert lines[0]["type"] == "header"
    assert lines[0]["feature_names"] == list(schema.feature_names(schema.DEFAULT_WINDOWS))
    samples = [x for x in lines if x["type"] == "sample"]
    assert len(samples) == 40
    assert 5 < sum(s["explore"] for s in samples) < 35
    assert {s["req_class"] for s in samples} == {64.0, 128.0, 192.0}
    col = lines[0]["feature_names"].index("app_queue_length")
    for s in samples:
        assert s["status"] == 200 and s["rtt_s"] > 0 and s["chosen"] in {"b1", "b2", "b3"}
        queues = {c["backend"]: c["x"][col] for c in s["candidates"]}
        assert queues == {"b1": 3.0, "b2": 0.0, "b3": 7.0}
    r = redis.Redis(unix_socket_path=redis_server.url.removeprefix("unix://"))
    assert r.xlen("presage:samples") == 40 and r.get("presage:samples:header") is not None
    r.close()
