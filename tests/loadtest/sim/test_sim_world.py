"""Backends and what happens between requests: capacities, interference, agent reports."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest.sim.background import Background
from loadtest.sim.engine import prepare, simulate
from loadtest.sim.scenario import Scenario
from loadtest.sim.state import SimState
from loadtest.sim.world import World, capacities


def test_capacities_span_the_heterogeneity_with_geometric_mean_one() -> None:
    cap = capacities(9, 4.0, np.random.default_rng(0))
    assert cap.max() / cap.min() == pytest.approx(4.0)
    assert np.exp(np.log(cap).mean()) == pytest.approx(1.0)


def test_episodes_cover_their_stationary_share_and_slow_service_down() -> None:
    s = Scenario(
        backends=1, servers=1, load=0.2, requests=40_000, classes=((1.0, 1.0),), service_cv=0.0,
        interference_on_s=2.0, interference_off_s=6.0, slowdown=3.0, heterogeneity=1.0, seed=5,
    )  # fmt: skip
    setup = prepare(s)
    result = simulate(setup, "random")
    factor = (result.done - result.start) / setup.workload.base_s
    slowed = np.isclose(factor, 3.0)
    assert (slowed | np.isclose(factor, 1.0)).all()
    assert slowed.mean() == pytest.approx(s.p_on, abs=0.06)
    # The factor is the episode state at the start of service.
    for i in range(0, s.requests, 997):
        assert slowed[i] == setup.world.interfered_at(0, float(result.start[i]))


def test_reports_sample_the_state_and_arrive_late() -> None:
    world = World(capacity=np.ones(2), servers=np.array([1, 1]), toggles=((), ()), slowdown=1.0)
    state = SimState.create(world, proxies=2)
    scenario = Scenario(backends=2, interval_s=1.0, delay_s=0.25)
    bg = Background(world, state, scenario, reports=True, rng=np.random.default_rng(0))
    state.nsys[:] = [3, 5]
    state.local[1][:] = [2, 0]
    drained: list[float] = []
    bg.advance(0.99, drained.append)  # both agents sampled (phases in [0, 1)), some delivered
    bg.advance(1.24, drained.append)  # every first sample delivered by phase + 0.25 < 1.25
    assert state.report_n.tolist() == [3.0, 5.0]
    assert state.report_local[1].tolist() == [2.0, 0.0]
    state.nsys[:] = [0, 0]
    bg.advance(1.24, drained.append)
    assert state.report_n.tolist() == [3.0, 5.0]  # the next samples are not in yet
    bg.advance(2.5, drained.append)
    assert state.report_n.tolist() == [0.0, 0.0]
    assert drained == sorted(drained)


def test_stale_view_herds_with_many_proxies() -> None:
    """Other proxies' dispatches are invisible until the next report: more proxies, worse."""
    base = Scenario(backends=8, requests=20_000, view="stale", interval_s=2.0, delay_s=1.0, seed=2)
    one = simulate(prepare(base.with_(proxies=1)), "predicted").rtt.mean()
    eight = simulate(prepare(base.with_(proxies=8)), "predicted").rtt.mean()
    assert eight > 1.2 * one
