"""Batched metric children export what prometheus-client's own calls would have."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from proxy.metrics import DECISION_BUCKETS, BatchedHistogram, BufferedHistogram, Metrics


def exported(values: list[float], kind: type[BatchedHistogram] | None) -> bytes:
    registry = CollectorRegistry()
    child = Histogram("h_seconds", "h", buckets=DECISION_BUCKETS, registry=registry)
    if kind is None:
        for v in values:
            child.observe(v)
    else:
        h = kind(child)
        for v in values:
            h.observe(v)
        h.flush()
    return generate_latest(registry)


def series(text: bytes) -> dict[str, float]:
    return {
        name.decode(): float(value)
        for name, value in (line.rsplit(b" ", 1) for line in text.splitlines() if not line.startswith(b"#"))
        if b"_created" not in name
    }


def test_buffered_and_batched_histograms_export_prometheus_own_buckets() -> None:
    rng = random.Random(3)
    values = [rng.choice([rng.uniform(0, 2e-3), *DECISION_BUCKETS]) for _ in range(2000)]  # edges too
    plain = series(exported(values, None))
    for kind in (BatchedHistogram, BufferedHistogram):
        got = series(exported(values, kind))
        # the sum is added up in another order
        assert got.pop("h_seconds_sum") == pytest.approx(plain["h_seconds_sum"], rel=1e-12)
        assert got == {k: v for k, v in plain.items() if k != "h_seconds_sum"}


def test_buffered_decision_durations_reach_a_scrape() -> None:
    metrics = Metrics()
    for v in (4e-6, 5e-6, 6e-6, 0.5):
        metrics.batched_decision_duration.observe(v)
    text = metrics.render()
    assert b'presage_decision_duration_seconds_bucket{le="5e-06"} 2.0' in text
    assert b'presage_decision_duration_seconds_bucket{le="1e-05"} 3.0' in text
    assert b"presage_decision_duration_seconds_count 4.0" in text
    assert metrics.batched_decision_duration.values == []  # emptied by the flush
    assert b"presage_decision_duration_seconds_count 4.0" in metrics.render()  # and not counted twice
