"""The admin listener: liveness, readiness (503 while draining), Prometheus metrics, backend state."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import Metrics

CONTRACT_METRICS = {
    "presage_requests": "counter",
    "presage_request_duration_seconds": "histogram",
    "presage_upstream_duration_seconds": "histogram",
    "presage_in_flight": "gauge",
    "presage_backend_up": "gauge",
    "presage_backend_ejected": "gauge",
    "presage_retries": "counter",
    "presage_ejections": "counter",
    "presage_config_reloads": "counter",
    "presage_build_info": "gauge",
    "presage_predicted_latency_seconds": "gauge",
    "presage_prediction_error_ratio": "histogram",
    "presage_decision_duration_seconds": "histogram",
    "presage_feature_age_seconds": "gauge",
    "presage_fallbacks": "counter",
    "presage_live_accuracy_ratio": "gauge",
}


async def scrape(client, running) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:  # type: ignore[no-untyped-def]
    async with client.get(f"{running.admin}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


async def test_every_contract_metric_is_exported(backends, proxy, client) -> None:
    (b1,) = await backends(1)
    running = await proxy([b1.url])
    async with client.get(f"{running.admin}/metrics") as resp:
        families = {f.name: f.type for f in text_string_to_metric_families(await resp.text())}
    for name, kind in CONTRACT_METRICS.items():
        assert families.get(name) == kind, name


async def test_requests_and_latency_are_counted_per_backend(backends, proxy, client) -> None:
    b1, b2 = await backends(2)
    running = await proxy([b1.url, b2.url])
    for _ in range(4):
        async with client.get(f"{running.url}/headers") as resp:
            assert resp.status == 200
    async with client.get(f"{running.url}/status/502") as resp:
        assert resp.status == 502
    samples = await scrape(client, running)
    requests = samples["presage_requests_total"]
    assert requests[(("backend", "b1"), ("code", "200"), ("protocol", "http1"))] == 2
    assert requests[(("backend", "b2"), ("code", "200"), ("protocol", "http1"))] == 2
    assert sum(v for k, v in requests.items() if ("code", "502") in k) == 1
    assert samples["presage_request_duration_seconds_count"][()] == 5
    assert samples["presage_upstream_duration_seconds_count"][(("backend", "b1"),)] >= 2
    assert samples["presage_backend_up"][(("backend", "b1"),)] == 1
    assert samples["presage_build_info"]


async def test_healthz_readyz_and_drain(backends, proxy, client) -> None:
    (b1,) = await backends(1)
    running = await proxy([b1.url], drain_delay_s=0.5)
    async with client.get(f"{running.admin}/healthz") as resp:
        assert resp.status == 200
    async with client.get(f"{running.admin}/readyz") as resp:
        assert resp.status == 200
    stopping = asyncio.create_task(running.worker.stop())
    await asyncio.sleep(0.1)
    async with client.get(f"{running.admin}/readyz") as resp:
        assert resp.status == 503
    async with client.get(f"{running.url}/headers") as resp:  # still serving during the drain delay
        assert resp.status == 200
    await stopping


async def test_backends_endpoint_reports_state(backends, proxy, client) -> None:
    b1, b2 = await backends(2)
    running = await proxy([b1.url, b2.url], policy="peak_ewma")
    async with client.get(f"{running.url}/headers") as resp:
        assert resp.status == 200
    async with client.get(f"{running.admin}/v1/backends") as resp:
        body = await resp.json()
    assert body["policy"] == "peak_ewma"
    rows = {row["id"]: row for row in body["backends"]}
    assert set(rows) == {"b1", "b2"}
    for row in rows.values():
        assert row["healthy"] is True and row["ejected"] is False
        assert row["in_flight"] == 0 and row["ewma_s"] >= 0 and "ejections" in row
    assert max(row["ewma_s"] for row in rows.values()) > 0  # the backend that answered has an estimate


async def test_ejections_and_retries_are_counted(backends, proxy, client, dead_url) -> None:
    (b1,) = await backends(1)
    running = await proxy(
        [dead_url, b1.url],
        retry={"attempts": 2},
        outlier={"consecutive_failures": 1, "max_ejected_percent": 50},
    )
    for _ in range(3):
        async with client.get(f"{running.url}/headers") as resp:
            assert resp.status == 200
    running.worker.sync_gauges()
    samples = await scrape(client, running)
    assert samples["presage_retries_total"][()] >= 1
    assert samples["presage_ejections_total"][(("backend", "b1"),)] == 1
    assert samples["presage_backend_ejected"][(("backend", "b1"),)] == 1


async def test_stop_gives_in_flight_requests_grace_s_then_cuts_them(backends, proxy, client) -> None:
    (b1,) = await backends(1)
    running = await proxy([b1.url], grace_s=0.3)
    slow = asyncio.create_task(client.get(f"{running.url}/slow?delay=4"))
    await asyncio.sleep(0.2)
    started = asyncio.get_running_loop().time()
    await running.worker.stop()
    assert (
        asyncio.get_running_loop().time() - started < 3.0
    )  # grace_s, then at most 2 x RUNNER_SHUTDOWN_S: well before the answer
    with pytest.raises(aiohttp.ClientError):
        resp = await slow
        await resp.read()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=60.0), max_size=40))
def test_batched_histogram_files_values_like_observe(values: list[float]) -> None:
    direct = Metrics()
    batched = Metrics()
    for value in values:
        direct.request_duration.observe(value)
        batched.request_duration_batched.observe(value)
    batched.flush()

    def samples(m: Metrics) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name, s.labels, round(s.value, 9))
            for f in m.registry.collect()
            if f.name == "presage_request_duration_seconds"
            for s in f.samples
            if not s.name.endswith("_created")
        ]

    assert samples(batched) == samples(direct)
