"""Envoy-style consecutive-failure ejection, through the pool that applies it."""

from __future__ import annotations

import random

import pytest

from proxy.balancer.base import RequestInfo
from proxy.balancer.endpoint import Endpoint
from proxy.balancer.registry import make_policy
from proxy.outlier import OutlierDetector, OutlierSettings
from proxy.pool import BackendPool, Outcome

SETTINGS = OutlierSettings(consecutive_failures=3, base_ejection_s=10.0, max_ejection_s=25.0)


def endpoints(n: int) -> list[Endpoint]:
    return [Endpoint(f"b{i}", f"http://127.0.0.1:{9000 + i}") for i in range(n)]


def pool_of(n: int, settings: OutlierSettings = SETTINGS, panic: float = 0.0) -> BackendPool:
    return BackendPool(
        endpoints(n),
        make_policy("round_robin"),
        outlier=settings,
        panic_threshold_percent=panic,
        clock=lambda: 0.0,
    )


def fail(
    pool: BackendPool, ep: Endpoint, now: float, times: int, outcome: Outcome = Outcome.HTTP_5XX
) -> None:
    for _ in range(times):
        pool.begin(ep, now)
        pool.end(ep, now, 0.001, outcome)


def ids(eps: object) -> list[str]:
    return [ep.id for ep in eps]  # type: ignore[attr-defined]


@pytest.mark.parametrize("outcome", [Outcome.HTTP_5XX, Outcome.CONNECT_ERROR, Outcome.TIMEOUT])
def test_consecutive_failures_eject(outcome: Outcome) -> None:
    pool = pool_of(3)
    b0 = pool.endpoints[0]
    fail(pool, b0, 0.0, 2, outcome)
    assert ids(pool.eligible(0.0)) == ["b0", "b1", "b2"]
    fail(pool, b0, 0.0, 1, outcome)
    assert ids(pool.eligible(0.0)) == ["b1", "b2"]
    assert b0.ejections == 1 and b0.ejected_until == 10.0


def test_a_success_resets_the_count_and_client_aborts_do_not_count() -> None:
    pool = pool_of(3)
    b0 = pool.endpoints[0]
    fail(pool, b0, 0.0, 2)
    fail(pool, b0, 0.0, 1, Outcome.OK)
    fail(pool, b0, 0.0, 2)
    fail(pool, b0, 0.0, 5, Outcome.CLIENT_ABORT)
    assert b0.consecutive_failures == 2
    assert not b0.is_ejected(0.0)


def test_ejection_grows_with_each_ejection_and_is_capped() -> None:
    pool = pool_of(3)
    b0 = pool.endpoints[0]
    now, durations = 0.0, []
    for _ in range(4):
        fail(pool, b0, now, 3)
        durations.append(b0.ejected_until - now)
        now = b0.ejected_until + 1.0  # fails again soon after coming back
    assert durations == [10.0, 20.0, 25.0, 25.0]
    assert b0.ejections == 4


def test_the_level_comes_down_while_the_backend_behaves() -> None:
    pool = pool_of(3)
    b0 = pool.endpoints[0]
    fail(pool, b0, 0.0, 3)  # level 1, out until 10
    fail(pool, b0, 11.0, 3)  # level 2, out until 31
    assert b0.ejected_until == 31.0
    fail(pool, b0, 31.0 + 2 * 10.0, 3)  # two base periods in service: level 2 -> 0, then 1
    assert b0.ejected_until - 51.0 == 10.0
    assert b0.ejections == 3


def test_late_failures_of_an_ejected_backend_do_not_extend_it() -> None:
    pool = pool_of(3)
    b0 = pool.endpoints[0]
    fail(pool, b0, 0.0, 3)
    fail(pool, b0, 5.0, 10)
    assert b0.ejected_until == 10.0 and b0.ejections == 1


def test_un_ejection_when_the_time_is_up() -> None:
    pool = pool_of(2)
    b0 = pool.endpoints[0]
    fail(pool, b0, 0.0, 3)
    assert ids(pool.eligible(9.99)) == ["b1"]
    assert ids(pool.eligible(10.0)) == ["b0", "b1"]
    row = pool.snapshot_json(10.0)[0]
    assert row["ejected"] is False and row["ejections"] == 1


def test_the_cap_limits_the_ejected_share() -> None:
    pool = pool_of(4)  # 50 % of 4: two may be out
    for ep in pool.endpoints:
        fail(pool, ep, 0.0, 3)
    assert [ep.is_ejected(0.0) for ep in pool.endpoints] == [True, True, False, False]
    assert ids(pool.eligible(0.0)) == ["b2", "b3"]


def test_a_small_pool_can_still_eject_one() -> None:
    pool = pool_of(2)  # 50 % of 2 is one
    b0, b1 = pool.endpoints
    fail(pool, b0, 0.0, 3)
    fail(pool, b1, 0.0, 3)
    assert b0.is_ejected(0.0) and not b1.is_ejected(0.0)
    lone = pool_of(3, OutlierSettings(consecutive_failures=3, max_ejected_percent=10.0))  # 10 % of 3 = 0.3
    fail(lone, lone.endpoints[2], 0.0, 3)
    assert lone.endpoints[2].is_ejected(0.0)


def test_zero_percent_or_disabled_never_ejects() -> None:
    for settings in (OutlierSettings(max_ejected_percent=0.0), OutlierSettings(enabled=False)):
        detector = OutlierDetector(settings, endpoints(3))
        ep = detector.endpoints[0]
        assert not any(detector.record(ep, True, 0.0) for _ in range(20))
        assert not ep.is_ejected(0.0)


def test_record_says_when_it_ejected() -> None:
    detector = OutlierDetector(SETTINGS, endpoints(3))
    ep = detector.endpoints[0]
    assert [detector.record(ep, True, 0.0) for _ in range(3)] == [False, False, True]


def test_panic_routes_to_all_when_too_few_are_left() -> None:
    eps = endpoints(4)
    pool = BackendPool(
        eps, make_policy("round_robin"), outlier=SETTINGS, panic_threshold_percent=50.0, clock=lambda: 0.0
    )
    eps[0].healthy = False
    assert ids(pool.eligible(0.0)) == ["b1", "b2", "b3"] and not pool.panic
    eps[1].healthy = False  # 2 of 4 = 50 %: not below the threshold
    assert ids(pool.eligible(0.0)) == ["b2", "b3"] and not pool.panic
    fail(pool, eps[2], 0.0, 3)  # 1 of 4 left: panic, every backend is a candidate again
    assert ids(pool.eligible(0.0)) == ["b0", "b1", "b2", "b3"] and pool.panic
    rng = random.Random(1)
    picked = {pool.choose(RequestInfo(), rng, 0.0).id for _ in range(8)}  # type: ignore[union-attr]
    assert picked == {"b0", "b1", "b2", "b3"}
    assert pool.panic_picks == 8
    assert ids(pool.eligible(10.0)) == ["b2", "b3"]  # the ejection ends, and with it the panic
    assert not pool.panic


def test_without_panic_an_empty_set_routes_nowhere() -> None:
    eps = endpoints(2)
    pool = BackendPool(
        eps, make_policy("random"), outlier=SETTINGS, panic_threshold_percent=0.0, clock=lambda: 0.0
    )
    for ep in eps:
        ep.healthy = False
    assert pool.choose(RequestInfo(), random.Random(0), 0.0) is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"consecutive_failures": 0}, "consecutive_failures"),
        ({"base_ejection_s": 0.0}, "base_ejection_s"),
        ({"max_ejection_s": 1.0}, "max_ejection_s"),
        ({"max_ejected_percent": 101.0}, "max_ejected_percent"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        OutlierSettings(**kwargs)  # type: ignore[arg-type]
