"""Every policy on one small heterogeneous fleet: valid schedules, determinism, known orderings."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest.sim.engine import Setup, prepare, simulate
from loadtest.sim.metrics import summarize
from loadtest.sim.policies import POLICIES
from loadtest.sim.scenario import Scenario

SMALL = Scenario(backends=8, requests=30_000, heterogeneity=4.0, load=0.7, seed=11)


@pytest.fixture(scope="module")
def setup() -> Setup:
    return prepare(SMALL)


@pytest.fixture(scope="module")
def means(setup: Setup) -> dict[str, float]:
    runs = {name: simulate(setup, name) for name in POLICIES}
    runs["predicted@0.6"] = simulate(setup, "predicted", 0.6)
    return {name: summarize(r).mean_s for name, r in runs.items()}


@pytest.mark.parametrize("policy", list(POLICIES))
def test_schedule_is_a_valid_fcfs_multiserver_schedule(setup: Setup, policy: str) -> None:
    result = simulate(setup, policy)
    arrival = setup.workload.arrival
    assert ((result.backend >= 0) & (result.backend < SMALL.backends)).all()
    assert (result.start >= arrival).all()
    assert (result.done > result.start).all()
    for b in range(SMALL.backends):
        mine = result.backend == b
        # FCFS: service starts in arrival order, and never more than `servers` at once.
        assert (np.diff(result.start[mine]) >= 0).all()
        events = np.concatenate((result.start[mine], result.done[mine]))
        steps = np.concatenate((np.ones(mine.sum()), -np.ones(mine.sum())))
        order = np.lexsort((steps, events))  # a departure frees its worker before a start at the same time
        assert np.cumsum(steps[order]).max() <= SMALL.servers


@pytest.mark.parametrize("policy", ["peak_ewma", "prequal", "predicted"])
def test_same_seed_same_run(policy: str) -> None:
    scenario = SMALL.with_(requests=5_000, view="stale")
    first = simulate(prepare(scenario), policy, 0.7)
    second = simulate(prepare(scenario), policy, 0.7)
    np.testing.assert_array_equal(first.backend, second.backend)
    np.testing.assert_array_equal(first.done, second.done)


def test_another_seed_another_run() -> None:
    a = simulate(prepare(SMALL.with_(requests=5_000)), "least_request")
    b = simulate(prepare(SMALL.with_(requests=5_000, seed=12)), "least_request")
    assert not np.array_equal(a.done, b.done)


def test_oracle_beats_perfect_predicted_beats_random(means: dict[str, float]) -> None:
    assert means["oracle"] <= means["predicted"] <= means["random"]


def test_round_robin_loses_to_least_request_on_heterogeneous_capacity(means: dict[str, float]) -> None:
    assert means["round_robin"] > 1.5 * means["least_request"]


def test_accurate_prediction_beats_inaccurate(means: dict[str, float]) -> None:
    assert means["predicted"] < means["predicted@0.6"]


def test_on_a_homogeneous_fleet_round_robin_is_no_disaster() -> None:
    setup = prepare(SMALL.with_(heterogeneity=1.0, interference_on_s=0.0, requests=10_000))
    rr = summarize(simulate(setup, "round_robin")).mean_s
    lr = summarize(simulate(setup, "least_request")).mean_s
    assert rr < 2.0 * lr


def test_unknown_policy_is_named() -> None:
    with pytest.raises(ValueError, match="unknown 'fastest'"):
        simulate(prepare(SMALL.with_(requests=100)), "fastest")
