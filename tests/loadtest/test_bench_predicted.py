"""bench_predicted's CPU accounting: what it reads from /proc and from a /metrics page."""

from __future__ import annotations

import os
import time

import pytest

from loadtest.bench_predicted import backend_shares, process_cpu_s, requests_answered, summarise
from proxy.metrics import Metrics


def test_process_cpu_counts_this_process_s_work() -> None:
    user0, sys0 = process_cpu_s(os.getpid())
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    user1, sys1 = process_cpu_s(os.getpid())
    assert user1 + sys1 - user0 - sys0 >= 0.03  # clock ticks are 10 ms: 50 ms of work shows


def test_requests_and_shares_are_read_from_a_metrics_page() -> None:
    metrics = Metrics()
    b1, b2 = metrics.for_backend("b1"), metrics.for_backend("b2")
    b1.request(200, "http1").inc(30)
    b1.request(502, "http1").inc(10)
    b2.request(200, "http1").inc(60)
    metrics.unrouted.request(503, "http1").inc(0)
    before = metrics.render().decode()
    b1.request(200, "http1").inc(10)
    b2.request(200, "http1").inc(30)
    b2.request(502, "http1").inc(10)
    page = metrics.render().decode()
    assert requests_answered(before) == 100.0 and requests_answered(page) == 150.0
    # the requests between the two pages, refused ones too
    assert backend_shares(before, page) == {"b1": 0.2, "b2": 0.8, "none": 0.0}
    assert backend_shares("", before) == {"b1": 0.4, "b2": 0.6, "none": 0.0}
    assert requests_answered("") == 0.0 and backend_shares("", "") == {}


def test_the_summary_pairs_each_round_s_two_runs() -> None:
    def run(rps: float, cpu_us: float) -> dict[str, float]:
        return {"rps": rps, "cpu_us_per_request": cpu_us}

    runs = {"predicted": [run(900, 110), run(450, 200)], "round_robin": [run(1000, 100), run(500, 190)]}
    out = summarise(runs, [])
    assert out["paired_ratio"] == pytest.approx(0.9) and out["paired_cpu_gap_us"] == pytest.approx(10.0)
    assert out["median_rps"] == {"predicted": 675.0, "round_robin": 750.0}
    assert out["median_cpu_us_per_request"] == {"predicted": 155.0, "round_robin": 145.0}
