"""One suite over every heuristic policy (uvicorn's parametrised-protocol style), then each one's own
promise. Randomness is a seeded ``random.Random``; time is a number passed in."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy.balancer.base import Endpoint as AnyEndpoint
from proxy.balancer.base import Policy, RequestInfo
from proxy.balancer.endpoint import Endpoint
from proxy.balancer.peak_ewma import load
from proxy.balancer.registry import make_policy

HEURISTICS = ("round_robin", "random", "least_request", "peak_ewma")
P2C = ("least_request", "peak_ewma")
REQ = RequestInfo()
NOW = 100.0


def make_endpoints(specs: Sequence[tuple[float, int, float]]) -> tuple[Endpoint, ...]:
    """(weight, in_flight, rtt) per endpoint; the rtt is observed at NOW."""
    endpoints = []
    for i, (weight, in_flight, rtt) in enumerate(specs):
        ep = Endpoint(f"b{i}", f"http://127.0.0.1:{8000 + i}", weight)
        ep.observe(rtt, NOW, True)
        ep.in_flight = in_flight
        endpoints.append(ep)
    return tuple(endpoints)


spec = st.tuples(
    st.integers(min_value=1, max_value=5).map(float),
    st.integers(min_value=0, max_value=20),
    st.floats(min_value=0.0005, max_value=2.0),
)
specs = st.lists(spec, min_size=0, max_size=12)


def metric(name: str, ep: AnyEndpoint) -> float:
    if name == "least_request":
        return (ep.in_flight + 1) / ep.weight
    return load(ep, NOW)


@pytest.fixture(params=HEURISTICS)
def policy_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@settings(max_examples=60, deadline=None)
@given(specs=specs, seed=st.integers(0, 2**32 - 1))
def test_every_policy_picks_a_candidate_and_none_only_when_empty(
    specs: list[tuple[float, int, float]], seed: int
) -> None:
    endpoints = make_endpoints(specs)
    rng = random.Random(seed)
    for name in HEURISTICS:
        policy = make_policy(name)
        for _ in range(5):
            chosen = policy.pick(endpoints, REQ, rng, NOW)
            if endpoints:
                assert any(chosen is ep for ep in endpoints)
            else:
                assert chosen is None


def test_one_candidate_is_returned_without_touching_the_rng(policy_name: str) -> None:
    (only,) = make_endpoints([(1.0, 3, 0.1)])
    rng = random.Random(7)
    state = rng.getstate()
    assert make_policy(policy_name).pick((only,), REQ, rng, NOW) is only
    assert rng.getstate() == state


def test_every_policy_reaches_every_equal_backend(policy_name: str) -> None:
    endpoints = make_endpoints([(1.0, 0, 0.01)] * 4)
    policy = make_policy(policy_name)
    rng = random.Random(3)
    seen = {policy.pick(endpoints, REQ, rng, NOW).id for _ in range(200)}  # type: ignore[union-attr]
    assert seen == {"b0", "b1", "b2", "b3"}


@pytest.mark.parametrize("name", P2C)
@settings(max_examples=80, deadline=None)
@given(specs=st.lists(spec, min_size=3, max_size=12), seed=st.integers(0, 2**32 - 1))
def test_p2c_never_picks_the_strictly_worst(
    name: str, specs: list[tuple[float, int, float]], seed: int
) -> None:
    endpoints = make_endpoints(specs)
    values = sorted(metric(name, ep) for ep in endpoints)
    policy = make_policy(name)
    rng = random.Random(seed)
    for _ in range(20):
        chosen = policy.pick(endpoints, REQ, rng, NOW)
        assert chosen is not None
        if values[-1] > values[-2]:
            assert metric(name, chosen) < values[-1]


@pytest.mark.parametrize("name", P2C)
@settings(max_examples=60, deadline=None)
@given(a=spec, b=spec, seed=st.integers(0, 2**32 - 1))
def test_p2c_with_two_candidates_picks_the_lighter(
    name: str, a: tuple[float, int, float], b: tuple[float, int, float], seed: int
) -> None:
    endpoints = make_endpoints([a, b])
    chosen = make_policy(name).pick(endpoints, REQ, random.Random(seed), NOW)
    assert chosen is not None
    assert metric(name, chosen) == min(metric(name, ep) for ep in endpoints)


@pytest.mark.parametrize("name", P2C)
def test_p2c_share_follows_the_rank(name: str) -> None:
    # With n distinct loads, P2C picks the k-th lightest (k = 1..n) with probability
    # 2 (n - k) / (n (n - 1)): for n = 4 that is 1/2, 1/3, 1/6, 0.
    endpoints = make_endpoints([(1.0, 3, 0.04), (1.0, 0, 0.01), (1.0, 2, 0.03), (1.0, 1, 0.02)])
    policy = make_policy(name)
    rng = random.Random(11)
    draws = 12_000
    counts = Counter(policy.pick(endpoints, REQ, rng, NOW).id for _ in range(draws))  # type: ignore[union-attr]
    expected = {"b1": 1 / 2, "b3": 1 / 3, "b2": 1 / 6, "b0": 0.0}
    for ep_id, share in expected.items():
        assert counts[ep_id] / draws == pytest.approx(share, abs=0.015)


def test_least_request_lets_weights_scale_capacity() -> None:
    # weight 3 with 5 in flight (6/3 = 2.0) is lighter than weight 1 with 2 in flight (3/1 = 3.0)
    heavy, light = make_endpoints([(3.0, 5, 0.01), (1.0, 2, 0.01)])
    assert make_policy("least_request").pick((light, heavy), REQ, random.Random(1), NOW) is heavy


def test_peak_ewma_weighs_rtt_against_in_flight() -> None:
    # 10 ms x (4 + 1) = 50 ms of expected work beats 100 ms x (0 + 1)
    busy_fast, idle_slow = make_endpoints([(1.0, 4, 0.010), (1.0, 0, 0.100)])
    assert make_policy("peak_ewma").pick((idle_slow, busy_fast), REQ, random.Random(1), NOW) is busy_fast
    busy_fast.in_flight = 10
    assert make_policy("peak_ewma").pick((idle_slow, busy_fast), REQ, random.Random(1), NOW) is idle_slow


@settings(max_examples=60, deadline=None)
@given(weights=st.lists(st.integers(1, 6), min_size=2, max_size=8), cycles=st.integers(1, 3))
def test_weighted_round_robin_gives_exactly_the_weights_per_cycle(weights: list[int], cycles: int) -> None:
    endpoints = make_endpoints([(float(w), 0, 0.01) for w in weights])
    policy = make_policy("round_robin")
    rng = random.Random(0)
    for _ in range(cycles):
        counts = Counter(policy.pick(endpoints, REQ, rng, NOW).id for _ in range(sum(weights)))  # type: ignore[union-attr]
        assert counts == {f"b{i}": w for i, w in enumerate(weights)}


def test_weighted_round_robin_spreads_a_heavy_backend_through_the_cycle() -> None:
    # NGINX's smooth-WRR example, 5, 1, 1: the light backends come mid-cycle, not after five a's.
    a, b, c = make_endpoints([(5.0, 0, 0.01), (1.0, 0, 0.01), (1.0, 0, 0.01)])
    policy = make_policy("round_robin")
    order = [policy.pick((a, b, c), REQ, random.Random(0), NOW) for _ in range(14)]
    assert [ep.id for ep in order if ep is not None] == ["b0", "b0", "b0", "b1", "b2", "b0", "b0"] * 2


@settings(max_examples=60, deadline=None)
@given(weights=st.lists(st.integers(1, 10), min_size=2, max_size=12))
@example(weights=[1, 1, 1, 1, 1, 5])
def test_weighted_round_robin_never_strays_far_from_the_ideal_share(weights: list[int]) -> None:
    # Smoothness: after every pick t, each backend's count is within 2 of t * w / sum(w).
    # EDF (Envoy) gives backend i its k-th pick near deadline k / w_i; ties between deadlines can
    # hold a heavy backend back by up to a pick: [1, 1, 1, 1, 1, 5] strays by exactly 1.5 at t = 7.
    # Picking each backend's whole weight in a burst would stray by far more (2.9 for 5 of 10).
    endpoints = make_endpoints([(float(w), 0, 0.01) for w in weights])
    policy = make_policy("round_robin")
    total, counts = sum(weights), Counter[str]()
    for t in range(1, 2 * total + 1):
        counts[policy.pick(endpoints, REQ, random.Random(0), NOW).id] += 1  # type: ignore[union-attr]
        for i, w in enumerate(weights):
            assert abs(counts[f"b{i}"] - t * w / total) < 2.0


def test_weighted_round_robin_keeps_its_schedule_across_retries_and_new_tuples() -> None:
    a, b, c = make_endpoints([(3.0, 0, 0.01), (1.0, 0, 0.01), (2.0, 0, 0.01)])
    policy = make_policy("round_robin")
    counts = Counter[str]()
    for k in range(600):
        if k % 5 == 0:
            candidates: Sequence[Endpoint] = [b, c]  # a retry that excludes a
        else:
            candidates = (a, b, c) if k % 7 else tuple([a, b, c])  # sometimes a new, equal snapshot
        counts[policy.pick(candidates, REQ, random.Random(0), NOW).id] += 1  # type: ignore[union-attr]
    assert all(abs(counts[ep_id] - 600 * w / 6) <= 2 for ep_id, w in (("b0", 3), ("b1", 1), ("b2", 2)))


def test_a_backend_that_joins_is_not_owed_a_backlog() -> None:
    a, b = make_endpoints([(2.0, 0, 0.01), (1.0, 0, 0.01)])
    policy = make_policy("round_robin")
    for _ in range(300):
        policy.pick((a, b), REQ, random.Random(0), NOW)
    late = Endpoint("late", "http://127.0.0.1:8100", 3.0)
    ids = [policy.pick((a, b, late), REQ, random.Random(0), NOW).id for _ in range(6)]  # type: ignore[union-attr]
    assert Counter(ids) == {"b0": 2, "b1": 1, "late": 3}


def test_round_robin_rotates_equal_weights_in_order() -> None:
    endpoints = make_endpoints([(2.0, 0, 0.01)] * 3)
    policy = make_policy("round_robin")
    ids = [policy.pick(endpoints, REQ, random.Random(0), NOW).id for _ in range(6)]  # type: ignore[union-attr]
    assert ids == ["b0", "b1", "b2", "b0", "b1", "b2"]


def test_round_robin_notices_a_new_candidate_tuple() -> None:
    a, b = make_endpoints([(1.0, 0, 0.01), (1.0, 0, 0.01)])
    policy = make_policy("round_robin")
    rng = random.Random(0)
    for _ in range(3):
        policy.pick((a, b), REQ, rng, NOW)
    heavy = Endpoint("b9", "http://127.0.0.1:8009", 3.0)
    counts = Counter(policy.pick((a, heavy), REQ, rng, NOW).id for _ in range(4))  # type: ignore[union-attr]
    assert counts == {"b0": 1, "b9": 3}


def test_weighted_random_follows_the_weights() -> None:
    endpoints = make_endpoints([(1.0, 0, 0.01), (3.0, 0, 0.01), (6.0, 0, 0.01)])
    policy = make_policy("random")
    rng = random.Random(5)
    draws = 20_000
    counts = Counter(policy.pick(endpoints, REQ, rng, NOW).id for _ in range(draws))  # type: ignore[union-attr]
    for ep_id, share in {"b0": 0.1, "b1": 0.3, "b2": 0.6}.items():
        assert counts[ep_id] / draws == pytest.approx(share, abs=0.015)


def test_equal_weight_random_is_uniform() -> None:
    endpoints = make_endpoints([(1.0, 0, 0.01)] * 5)
    policy: Policy = make_policy("random")
    rng = random.Random(9)
    counts = Counter(policy.pick(endpoints, REQ, rng, NOW).id for _ in range(10_000))  # type: ignore[union-attr]
    assert all(abs(n / 10_000 - 0.2) < 0.02 for n in counts.values())
    assert len(counts) == 5
