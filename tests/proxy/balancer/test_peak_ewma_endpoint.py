"""Peak-EWMA numbers (Finagle PeakEwma / tower peak_ewma), checked by hand-computed values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.balancer.endpoint import (
    DEFAULT_RTT_S,
    FAILURE_PENALTY_FACTOR,
    MAX_FAILURE_PENALTY_S,
    Endpoint,
)

DECAY = 10.0


def steady(rtt: float = 0.010, until: float = 100.0, step: float = 0.1) -> Endpoint:
    """An endpoint that answered in ``rtt`` every ``step`` seconds up to ``until``."""
    ep = Endpoint("a", "http://127.0.0.1:1", decay_s=DECAY)
    t = 0.0
    while t <= until:
        ep.observe(rtt, t, True)
        t = round(t + step, 6)
    return ep


def test_steady_traffic_converges_on_the_rtt() -> None:
    ep = steady(0.010)
    assert ep.ewma_cost(100.0) == pytest.approx(0.010, rel=1e-9)


def test_a_spike_is_taken_at_once() -> None:
    ep = steady(0.010)
    ep.observe(0.200, 100.05, True)
    assert ep.ewma_cost(100.05) == 0.200


def test_after_a_spike_observations_pull_it_back_with_the_time_constant() -> None:
    ep = steady(0.010)
    ep.observe(0.200, 100.0, True)
    ep.observe(0.010, 100.0 + DECAY, True)  # one time constant later: w = 1/e
    w = math.exp(-1.0)
    assert ep.ewma_cost(100.0 + DECAY) == pytest.approx(0.200 * w + 0.010 * (1 - w))


def test_between_observations_the_estimate_decays_toward_zero() -> None:
    ep = steady(0.050)
    assert ep.ewma_cost(100.0 + DECAY) == pytest.approx(0.050 / math.e)
    assert ep.ewma_cost(100.0 + 3 * DECAY) == pytest.approx(0.050 * math.exp(-3.0))
    assert ep.ewma_cost(99.0) == pytest.approx(0.050)  # a read from the past is not extrapolated


def test_reading_does_not_change_the_estimate() -> None:
    ep = steady(0.050)
    ep.ewma_cost(150.0)
    assert ep.ewma_cost(100.0) == pytest.approx(0.050)


def test_the_decay_is_configurable() -> None:
    ep = Endpoint("a", "http://127.0.0.1:1", decay_s=2.0)
    ep.observe(0.5, 0.0, True)
    assert ep.ewma_cost(2.0) == pytest.approx(0.5 / math.e)


def test_load_is_cost_times_in_flight_plus_one_over_weight() -> None:
    ep = Endpoint("a", "http://127.0.0.1:1", weight=2.0)
    ep.observe(0.030, 5.0, True)
    ep.in_flight = 3
    assert ep.load(5.0) == pytest.approx(0.030 * 4 / 2.0)


def test_a_fast_failure_doubles_the_cost_instead_of_lowering_it() -> None:
    ep = steady(0.020)
    ep.observe(0.001, 100.0, False)
    assert ep.ewma_cost(100.0) == pytest.approx(FAILURE_PENALTY_FACTOR * 0.020)
    ep.observe(0.001, 100.0, False)
    assert ep.ewma_cost(100.0) == pytest.approx(FAILURE_PENALTY_FACTOR**2 * 0.020)


def test_the_failure_penalty_uses_the_pool_average_when_that_is_worse() -> None:
    ep = steady(0.010)
    ep.observe(0.001, 100.0, False, pool_cost_s=0.300)
    assert ep.ewma_cost(100.0) == pytest.approx(FAILURE_PENALTY_FACTOR * 0.300)


def test_the_failure_penalty_is_capped_but_a_slower_failure_counts_in_full() -> None:
    ep = steady(0.010)
    ep.observe(0.001, 100.0, False, pool_cost_s=1000.0)
    assert ep.ewma_cost(100.0) == MAX_FAILURE_PENALTY_S
    ep.observe(30.0, 100.0, False)  # a 30 s timeout is a 30 s observation
    assert ep.ewma_cost(100.0) == 30.0


@settings(max_examples=150, deadline=None)
@given(
    history=st.lists(
        st.tuples(st.floats(0.0, 5.0), st.floats(0.0, 20.0), st.booleans()), min_size=0, max_size=20
    ),
    fail_rtt=st.floats(0.0, 60.0),
    gap=st.floats(0.0, 30.0),
    pool_cost=st.floats(0.0, 5.0),
)
def test_a_failure_never_lowers_the_cost(
    history: list[tuple[float, float, bool]], fail_rtt: float, gap: float, pool_cost: float
) -> None:
    ep = Endpoint("a", "http://127.0.0.1:1", decay_s=DECAY)
    t = 0.0
    for rtt, dt, ok in history:
        t += dt
        ep.observe(rtt, t, ok)
    t += gap
    before = ep.ewma_cost(t)
    ep.observe(fail_rtt, t, False, pool_cost_s=pool_cost)
    assert ep.ewma_cost(t) >= before
    assert ep.ewma_cost(t) >= fail_rtt


def test_a_new_endpoint_starts_at_the_default_then_at_its_seed() -> None:
    ep = Endpoint("a", "http://127.0.0.1:1")
    assert ep.ewma_cost(0.0) == DEFAULT_RTT_S
    assert not ep.has_data
    ep.seed_rtt(0.080, 50.0)
    assert ep.ewma_cost(50.0) == 0.080
    ep.seed_rtt(0.5, 50.0)  # once it has data a seed no longer applies
    assert ep.ewma_cost(50.0) == 0.080


def test_initial_rtt_counts_as_data() -> None:
    ep = Endpoint("a", "http://127.0.0.1:1", initial_rtt_s=0.25)
    ep.seed_rtt(0.01, 0.0)
    assert ep.ewma_cost(0.0) == 0.25


def test_state_changes_bump_the_epoch_only_when_they_change_something() -> None:
    ep = Endpoint("a", "http://127.0.0.1:1")
    epoch = Endpoint.state_epoch
    ep.healthy = True
    assert Endpoint.state_epoch == epoch
    ep.healthy = False
    ep.ejected_until = 12.0
    assert Endpoint.state_epoch == epoch + 2
    assert ep.is_ejected(11.9) and not ep.is_ejected(12.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"weight": 0.0}, "weight"),
        ({"weight": math.nan}, "weight"),
        ({"decay_s": -1.0}, "decay_s"),
        ({"initial_rtt_s": -0.1}, "initial_rtt_s"),
    ],
)
def test_bad_values_are_named(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        Endpoint("a", "http://127.0.0.1:1", **kwargs)  # type: ignore[arg-type]
