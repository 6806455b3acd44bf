"""BackendPool: the eligible snapshot, begin/end bookkeeping, retries' exclusion, reloads."""

from __future__ import annotations

import random

import pytest

from proxy.balancer.base import RequestInfo
from proxy.balancer.endpoint import FAILURE_PENALTY_FACTOR, Endpoint
from proxy.balancer.registry import make_policy
from proxy.outlier import OutlierSettings
from proxy.pool import BackendPool, Outcome

REQ = RequestInfo()


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_pool(n: int = 3, policy: str = "peak_ewma", clock: FakeClock | None = None) -> BackendPool:
    eps = [Endpoint(f"b{i}", f"http://127.0.0.1:{9000 + i}", decay_s=10.0) for i in range(n)]
    return BackendPool(eps, make_policy(policy), outlier=OutlierSettings(), clock=clock or FakeClock())


def test_begin_and_end_track_in_flight_and_rtt() -> None:
    pool = make_pool()
    ep = pool.endpoints[0]
    pool.begin(ep, 1.0)
    pool.begin(ep, 1.0)
    assert ep.in_flight == 2
    pool.end(ep, 1.2, 0.2, Outcome.OK)
    assert ep.in_flight == 1
    assert ep.ewma_cost(1.2) == pytest.approx(0.2)


def test_end_never_drives_in_flight_negative() -> None:
    pool = make_pool()
    ep = pool.endpoints[0]
    pool.end(ep, 0.0, 0.01, Outcome.OK)
    assert ep.in_flight == 0


def test_client_abort_touches_neither_ewma_nor_outlier_state() -> None:
    pool = make_pool()
    ep = pool.endpoints[0]
    pool.end(ep, 1.0, 0.05, Outcome.OK)
    pool.end(ep, 1.0, 0.05, Outcome.HTTP_5XX)
    before, failures = ep.ewma_cost(1.0), ep.consecutive_failures
    pool.begin(ep, 1.0)
    pool.end(ep, 1.0, 9.0, Outcome.CLIENT_ABORT)
    assert (ep.ewma_cost(1.0), ep.consecutive_failures, ep.in_flight) == (before, failures, 0)


def test_a_failure_is_penalised_against_the_pool_average() -> None:
    pool = make_pool(2)
    b0, b1 = pool.endpoints
    pool.end(b0, 5.0, 0.010, Outcome.OK)
    pool.end(b1, 5.0, 0.090, Outcome.OK)
    pool.end(b0, 5.0, 0.001, Outcome.CONNECT_ERROR)  # a fast failure of the fast backend
    assert b0.ewma_cost(5.0) == pytest.approx(FAILURE_PENALTY_FACTOR * (0.010 + 0.090) / 2)


def test_exclude_skips_tried_backends_and_can_empty_the_set() -> None:
    pool = make_pool(3, "round_robin")
    rng = random.Random(0)
    for _ in range(6):
        ep = pool.choose(REQ, rng, 0.0, exclude={"b0", "b2"})
        assert ep is not None and ep.id == "b1"
    assert pool.choose(REQ, rng, 0.0, exclude=("b0", "b1", "b2")) is None


def test_the_eligible_tuple_is_rebuilt_only_on_change() -> None:
    clock = FakeClock()
    pool = make_pool(3, clock=clock)
    rng = random.Random(0)
    first = pool.eligible(0.0)
    rebuilds = pool.rebuilds
    for i in range(100):
        ep = pool.choose(REQ, rng, i * 0.01)
        assert ep is not None
        pool.begin(ep, i * 0.01)
        pool.end(ep, i * 0.01, 0.01, Outcome.OK)
    assert pool.eligible(1.0) is first and pool.rebuilds == rebuilds
    pool.endpoints[1].healthy = False
    assert [ep.id for ep in pool.eligible(1.0)] == ["b0", "b2"]
    assert pool.rebuilds == rebuilds + 1


def test_update_keeps_live_state_of_unchanged_backends() -> None:
    clock = FakeClock(10.0)
    pool = make_pool(3, clock=clock)
    b0, b1, b2 = pool.endpoints
    pool.end(b0, 10.0, 0.020, Outcome.OK)
    pool.end(b1, 10.0, 0.040, Outcome.OK)
    pool.begin(b0, 10.0)
    b0.ejections = 2
    pool.update(
        [("b0", b0.url, 3.0), ("b1", "http://127.0.0.1:9999", 1.0), ("b3", "http://127.0.0.1:9003", 1.0)]
    )
    n0, n1, n3 = pool.endpoints
    assert n0 is b0 and (n0.weight, n0.in_flight, n0.ejections) == (3.0, 1, 2)
    assert n0.ewma_cost(10.0) == pytest.approx(0.020)
    assert n1 is not b1 and n1.url == "http://127.0.0.1:9999"  # a moved backend is a new backend
    assert b2 not in pool.endpoints
    # new backends start at the average of those with data (only b0 now), not at zero
    assert n1.ewma_cost(10.0) == pytest.approx(0.020) and n3.ewma_cost(10.0) == pytest.approx(0.020)
    assert pool.detector.endpoints == pool.endpoints
    assert [ep.id for ep in pool.eligible(10.0)] == ["b0", "b1", "b3"]


def test_a_new_pool_seeds_cold_endpoints_at_the_average() -> None:
    warm = [Endpoint("a", "http://127.0.0.1:1"), Endpoint("b", "http://127.0.0.1:2")]
    warm[0].observe(0.1, 0.0, True)
    warm[1].observe(0.3, 0.0, True)
    cold = Endpoint("c", "http://127.0.0.1:3")
    BackendPool([*warm, cold], make_policy("peak_ewma"), outlier=OutlierSettings(), clock=FakeClock())
    assert cold.ewma_cost(0.0) == pytest.approx(0.2)


def test_a_bad_update_changes_nothing() -> None:
    pool = make_pool(2)
    b0, b1 = pool.endpoints
    for bad in (
        [("b0", b0.url, 5.0), ("b0", b1.url, 1.0)],
        [("b0", b0.url, 5.0), ("b1", b1.url, 0.0)],
    ):
        with pytest.raises(ValueError, match=r"^backends: "):
            pool.update(bad)
        assert pool.endpoints == (b0, b1) and b0.weight == 1.0


def test_duplicate_ids_are_refused() -> None:
    eps = [Endpoint("a", "http://127.0.0.1:1"), Endpoint("a", "http://127.0.0.1:2")]
    with pytest.raises(ValueError, match="duplicate backend id"):
        BackendPool(eps, make_policy("random"), outlier=OutlierSettings(), clock=FakeClock())


def test_bad_panic_threshold_is_named() -> None:
    with pytest.raises(ValueError, match=r"^panic_threshold_percent:"):
        BackendPool(
            [],
            make_policy("random"),
            outlier=OutlierSettings(),
            panic_threshold_percent=120.0,
            clock=FakeClock(),
        )


def test_snapshot_json_reports_each_backend() -> None:
    pool = make_pool(2)
    b0 = pool.endpoints[0]
    pool.end(b0, 0.0, 0.05, Outcome.OK)
    pool.begin(b0, 0.0)
    row = pool.snapshot_json(0.0)[0]
    assert row == {
        "id": "b0",
        "url": "http://127.0.0.1:9000",
        "weight": 1.0,
        "healthy": True,
        "ejected": False,
        "ejected_until": None,
        "ejections": 0,
        "consecutive_failures": 0,
        "in_flight": 1,
        "ewma_s": pytest.approx(0.05),
        "load": pytest.approx(0.10),
    }


def test_peak_ewma_pool_steers_away_from_a_slow_backend() -> None:
    # Closed loop on a fake clock: b2 answers in 50 ms, the others in 5 ms.
    pool = make_pool(3, "peak_ewma")
    rtt = {"b0": 0.005, "b1": 0.005, "b2": 0.050}
    rng = random.Random(42)
    counts = dict.fromkeys(rtt, 0)
    for i in range(3000):
        now = i * 0.002
        ep = pool.choose(REQ, rng, now)
        assert ep is not None
        counts[ep.id] += 1
        pool.begin(ep, now)
        pool.end(ep, now + rtt[ep.id], rtt[ep.id], Outcome.OK)
    assert counts["b2"] < 0.2 * 3000
    assert min(counts["b0"], counts["b1"]) > 0.35 * 3000
