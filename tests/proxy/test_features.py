"""The feature store against a real Redis server, fed by hand and by real agent processes."""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import redis.asyncio as aredis

from metrics_agent import schema
from proxy.features import REJECT_REASONS, FeatureSnapshot, FeatureStore
from proxy.metrics import Metrics
from proxy.redis_conn import RedisEndpoint, start_embedded

REPO = Path(__file__).resolve().parents[2]
N = len(schema.feature_names())


@pytest.fixture
def workdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="presage-t-", dir="/tmp")  # short: unix socket paths are limited
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def redis_ep(workdir: str) -> Iterator[RedisEndpoint]:
    ep = start_embedded(workdir)
    yield ep
    ep.close()


@pytest.fixture
async def writer(redis_ep: RedisEndpoint) -> AsyncIterator[aredis.Redis]:
    client = aredis.Redis.from_url(redis_ep.url)
    yield client
    await client.aclose()


def vector(backend: str, ts: float, seq: int = 1, *, base: float = 1.0, **over: Any) -> bytes:
    obj: dict[str, Any] = {
        "v": schema.SCHEMA_VERSION, "backend": backend, "seq": seq, "ts": ts,
        "windows": list(schema.DEFAULT_WINDOWS), "values": [base + i for i in range(N)],
        "missing": ["gpu_util"],
    }  # fmt: skip
    obj.update(over)
    return orjson.dumps(obj)


async def put(client: aredis.Redis, backend: str, raw: bytes) -> None:
    await client.set(schema.vector_key(backend), raw)
    await client.publish(schema.updates_channel(), backend)


async def until(predicate: Callable[[], Any], timeout_s: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def store_factory(redis_ep: RedisEndpoint) -> AsyncIterator[Callable[..., Any]]:
    stores: list[FeatureStore] = []

    async def make(ids: list[str], **kwargs: Any) -> FeatureStore:
        store = FeatureStore(redis_ep.url, ids, **kwargs)
        stores.append(store)
        await store.start()
        return store

    yield make
    for store in stores:
        await store.stop()


async def test_a_published_vector_becomes_a_read_only_snapshot_row(
    writer: aredis.Redis, store_factory
) -> None:  # type: ignore[no-untyped-def]
    seen: list[FeatureSnapshot] = []
    store = await store_factory(["b1", "b2"], poll_interval_s=30.0)  # only pub/sub can deliver in time
    store.on_snapshot.append(seen.append)
    await until(lambda: store.connected, what="connected")
    first = store.snapshot
    assert first.names == schema.feature_names() and first.backend_ids == ("b1", "b2")
    assert first.row("b1") is None and first.is_stale("b1", time.time())
    ts = time.time()
    await put(writer, "b1", vector("b1", ts, seq=7))
    snap = await until(lambda: store.snapshot if store.snapshot.has_vector[0] else None, what="the vector")
    assert snap is not first and snap.seq > first.seq and seen[-1] is snap
    row = snap.row("b1")
    assert row is not None and row.dtype == np.float32
    np.testing.assert_array_equal(row, np.arange(1, N + 1, dtype=np.float32))
    assert snap.sample_ts[0] == ts and snap.vector_seq[0] == 7 and np.isnan(snap.sample_ts[1])
    assert not snap.is_stale("b1", ts + 1) and snap.is_stale("b2", ts + 1) and snap.is_stale("nope", ts)
    assert snap.describe(ts + 1)["b1"] == {"age_s": 1.0, "stale": False, "seq": 7, "missing": ["gpu_util"]}
    with pytest.raises(ValueError):
        snap.matrix[0, 0] = 5.0  # the hot path shares it: nobody may write
    with pytest.raises(ValueError):
        row[0] = 5.0
    np.testing.assert_array_equal(snap.fresh(ts + 1), [True, False])
    assert np.isnan(snap.ages(ts + 1)[1])


async def test_the_poll_finds_a_vector_whose_notification_was_missed(
    writer: aredis.Redis, store_factory
) -> None:  # type: ignore[no-untyped-def]
    store = await store_factory(["b1"], poll_interval_s=0.1)
    await writer.set(schema.vector_key("b1"), vector("b1", time.time()))  # SET without PUBLISH
    await until(lambda: store.snapshot.has_vector[0], what="the polled vector")


BAD: dict[str, Callable[[float], bytes]] = {
    "undecodable": lambda ts: b"\xff\x00not json",
    "version": lambda ts: vector("b1", ts, v=2),
    "length": lambda ts: vector("b1", ts, values=[1.0, 2.0]),
    "non_finite": lambda ts: json.dumps(
        {"v": 1, "backend": "b1", "seq": 1, "ts": ts, "windows": [5, 20, 60], "values": [float("nan")] * N}
    ).encode(),
    "type": lambda ts: vector("b1", ts, values=["x"] * N),
    "field": lambda ts: orjson.dumps({"v": 1, "backend": "b1", "ts": ts}),
    "windows": lambda ts: vector(
        "b1", ts, windows=[5, 20], values=[1.0] * len(schema.feature_names((5, 20)))
    ),
    "backend": lambda ts: vector("b2", ts),
    "future": lambda ts: vector("b1", ts + 3600),
    "range": lambda ts: vector("b1", ts, values=[1e39] * N),
}


async def test_bad_vectors_are_rejected_by_reason_and_the_last_good_one_is_kept(
    writer: aredis.Redis, redis_ep: RedisEndpoint
) -> None:
    metrics = Metrics()
    store = FeatureStore(redis_ep.url, ["b1"], metrics=metrics, poll_interval_s=0.05, ttl_s=30.0)
    await store.start()
    try:
        good_ts = time.time()
        await put(writer, "b1", vector("b1", good_ts, base=10.0))
        await until(lambda: store.snapshot.has_vector[0], what="the good vector")
        good = store.snapshot.row("b1")
        for reason, make in BAD.items():
            await put(writer, "b1", make(time.time()))
            await until(lambda r=reason: store.rejected[r] >= 1, what=f"a {reason} rejection")
        orjson_nan = vector("b1", time.time(), values=[float("nan")] * N)  # orjson writes NaN as null
        await put(writer, "b1", orjson_nan)
        await until(lambda: store.rejected["non_finite"] >= 2, what="the null rejection")
        await asyncio.sleep(0.2)  # several polls re-read the same bad value: it counts once
        assert store.rejected == {**dict.fromkeys(REJECT_REASONS, 1), "non_finite": 2}
        snap = store.snapshot
        assert snap.sample_ts[0] == good_ts and snap.has_vector[0]
        np.testing.assert_array_equal(snap.row("b1"), good)
        sample = metrics.registry.get_sample_value
        assert sample("presage_feature_vectors_rejected_total", {"reason": "version"}) == 1.0
        assert sample("presage_feature_vectors_rejected_total", {"reason": "non_finite"}) == 2.0
        await put(writer, "b1", vector("b1", time.time(), base=20.0))  # a good one is taken again
        await until(lambda: store.snapshot.row("b1") is not None and store.snapshot.row("b1")[0] == 20.0)
    finally:
        await store.stop()


async def test_a_vector_goes_stale_by_the_clock_passed_in(writer: aredis.Redis, store_factory) -> None:  # type: ignore[no-untyped-def]
    now = [1000.0]
    store = await store_factory(["b1"], ttl_s=3.0, poll_interval_s=0.05, clock=lambda: now[0])
    await put(writer, "b1", vector("b1", 999.5))
    snap = await until(lambda: store.snapshot if store.snapshot.has_vector[0] else None, what="the vector")
    assert not snap.is_stale("b1", 1002.0) and snap.is_stale("b1", 1002.6)  # age 3.1 s > ttl
    assert snap.ages(1002.6)[0] == pytest.approx(3.1)
    now[0] = 1003.0
    stale = await until(lambda: store.snapshot if not store.snapshot.has_vector[0] else None, what="expiry")
    assert stale.row("b1") is None and stale.sample_ts[0] == 999.5  # the age stays visible
    assert stale.describe(1003.0)["b1"]["stale"] is True and stale.describe(1003.0)["b1"]["age_s"] == 3.5
    assert not stale.matrix.any()  # a stale backend is unknown, never idle with zero load
    await put(writer, "b1", vector("b1", 990.0, seq=2))  # arrives already stale: not taken, not bad
    await asyncio.sleep(0.2)
    assert not store.snapshot.has_vector[0] and sum(store.rejected.values()) == 0


async def test_set_backends_reshapes_rows_and_keeps_vectors_by_id(
    writer: aredis.Redis, store_factory
) -> None:  # type: ignore[no-untyped-def]
    ts = time.time()
    await writer.set(schema.vector_key("b1"), vector("b1", ts, base=1.0))
    await writer.set(schema.vector_key("b3"), vector("b3", ts, base=3.0))
    store = await store_factory(["b1", "b2"], poll_interval_s=0.05, ttl_s=30.0)
    await until(lambda: store.snapshot.has_vector[0], what="b1")
    store.set_backends(["b3", "b1"])
    assert store.snapshot.backend_ids == ("b3", "b1") and store.snapshot.row("b1")[0] == 1.0
    await until(lambda: store.snapshot.row("b3") is not None, what="b3 fetched after the reload")
    assert store.snapshot.index == {"b3": 0, "b1": 1} and store.snapshot.row("b3")[0] == 3.0


def _agent(log: Path, url: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "agent", "--backend-id", "b1", "--redis", url,
             "--interval", "0.1", "--ttl", "1.0", "--pid", str(os.getpid())],
            cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip


async def test_redis_killed_and_restarted_under_a_running_agent_and_store(
    workdir: str, tmp_path: Path
) -> None:
    first = start_embedded(workdir)
    log = tmp_path / "agent.log"
    agent = _agent(log, first.url)
    store = FeatureStore(first.url, ["b1"], ttl_s=1.0, poll_interval_s=0.1)
    second: RedisEndpoint | None = None
    await store.start()
    try:
        await until(lambda: store.snapshot.has_vector[0], timeout_s=15, what="the agent's first vector")
        assert first.process is not None
        first.process.kill()  # no shutdown: the socket just goes dead
        first.process.wait()
        await until(lambda: not store.connected, what="the store noticing")
        await until(lambda: not store.snapshot.has_vector[0], what="the vector going stale during the outage")
        assert agent.poll() is None
        await asyncio.sleep(0.5)  # the agent keeps sampling (and failing to push) meanwhile
        restarted_at = time.time()
        second = start_embedded(workdir)  # same socket path, empty data
        assert second.url == first.url
        fresh = await until(
            lambda: store.snapshot.sample_ts[0] > restarted_at and store.snapshot.has_vector[0],
            timeout_s=15, what="a vector sampled after the restart",
        )  # fmt: skip
        assert fresh and store.connected and agent.poll() is None
    finally:
        await store.stop()
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
        rc = agent.wait(10)
        first.close()
        if second is not None:
            second.close()
    text = log.read_text()
    assert rc == 0, text
    assert "redis unavailable" in text and "redis is back" in text
