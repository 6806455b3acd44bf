"""The C table path (``_fastpick.decide``) decides exactly as ``PredictedPolicy.decide`` in Python.

Two policies on the same real ONNX model (ridge, reading this proxy's in-flight count, so that
decisions are answered from prediction tables), the same snapshots, endpoints and clocks: one with
the C path, one without. Hypothesis draws what moves a decision off the table path: backends with
no row or a stale vector, in-flight counts beyond the table, requests out of the training range,
methods, the in-flight penalty, sampling, a low live accuracy, slow decisions that open the
breaker. Every decision and the state it leaves (table hits, fallbacks, the breaker's books, the
duration histogram) must be the same."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from predict_fixtures import snapshot, write_queue_model

from proxy.balancer import predicted
from proxy.balancer.base import RequestInfo
from proxy.balancer.endpoint import Endpoint
from proxy.balancer.peak_ewma import PeakEwmaPolicy
from proxy.balancer.predicted import Decision, PredictedPolicy, PredictedSettings
from proxy.predict.decision_budget import DecisionBudget
from proxy.predict.model_holder import ModelHolder, load_model

NOW = 1000.0  # the pool's monotonic clock
WALL = 5_000.0  # the agents' wall clock


@dataclass
class Store:
    snapshot: Any


@pytest.fixture(scope="module")
def flight_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # reads the in-flight count (tables) and every request input (the table key: size, class, method)
    return write_queue_model(tmp_path_factory.mktemp("fast") / "m", in_flight=True, request=True)


def ticker(steps: list[float]) -> Callable[[], float]:
    """A perf_counter that advances by ``steps[0]`` per call: decision times are exact and equal on
    both paths, within the budget (2 us) or over it (8 us) as the test sets ``steps[0]``."""
    t = [0.0]

    def tick() -> float:
        t[0] += steps[0]
        return t[0]

    return tick


def make(
    holder: ModelHolder, store: Store, fast: bool, durations: list[float], steps: list[float], **s: Any
) -> PredictedPolicy:
    p = PredictedPolicy(
        holder=holder,
        features=store,
        fallback=PeakEwmaPolicy(),
        settings=PredictedSettings(**{"min_budget_s": 5e-6, "min_observations": 5, **s}),
        on_duration=durations.append,
        perf_counter=ticker(steps),
        wall_clock=lambda: WALL,
    )
    # a breaker that judges every 4 decisions (the default window is 200): two slow ones open it
    # (a 10-us median RTT: the budget is the 5-us minimum)
    p.budget = DecisionBudget(
        budget_frac=0.1, min_budget_s=5e-6, window=4, max_slow_share=0.25, cooldown_s=1.0, initial_rtt_s=1e-5
    )
    p.fast = fast
    return p


def same(a: Decision, b: Decision) -> None:
    def ids(eps: Any) -> list[str | None]:
        return [ep.id if ep is not None else None for ep in eps]

    assert ids([a.endpoint, a.runner_up]) == ids([b.endpoint, b.runner_up])
    for x, y in ((a.predicted_s, b.predicted_s), (a.runner_up_s, b.runner_up_s)):
        assert x == y or (math.isnan(x) and math.isnan(y))
    assert (a.fallback, a.duration_s) == (b.fallback, b.duration_s)
    assert ids(a.scored) == ids(b.scored)
    assert (a.preds is None) == (b.preds is None)
    assert list(a.preds or []) == list(b.preds or [])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_c_and_python_decide_alike(flight_model: Path, data: st.DataObject) -> None:
    holder = ModelHolder()
    holder.swap(load_model(flight_model, max_batch=64, ood_tolerance=0.25))
    n = data.draw(st.integers(2, 7), label="backends")
    queues = data.draw(st.lists(st.integers(0, 20), min_size=n, max_size=n), label="queues")
    ids = [f"b{i}" for i in range(n)]
    age = data.draw(st.sampled_from([0.1, 0.1, 10.0]), label="age")  # 10 s: stale
    snap = snapshot(queues, ids=ids, now=WALL, age_s=age)
    store = Store(snap)
    knobs = {
        "choices": data.draw(st.sampled_from([0, 2]), label="choices"),
        "inflight_penalty": data.draw(st.sampled_from([0.0, 0.5]), label="penalty"),
    }
    durations: dict[bool, list[float]] = {True: [], False: []}
    steps = [2e-6]
    policies = {fast: make(holder, store, fast, durations[fast], steps, **knobs) for fast in (True, False)}
    if data.draw(st.integers(0, 3), label="low live accuracy") == 0:
        for p in policies.values():
            for _ in range(10):
                p.observe(0.001, 0.01, True)  # off by 90 %: below any floor
            p.feedback.flush()
    unknown = data.draw(st.integers(0, 3), label="a backend without a row") == 0
    eps = [Endpoint(bid, f"http://127.0.0.1:{9000 + i}") for i, bid in enumerate(ids)]
    if unknown:
        eps.append(Endpoint("zz", "http://127.0.0.1:8999"))
    rngs = {fast: random.Random(3) for fast in (True, False)}
    now = NOW
    for _ in range(8):
        for ep in eps:
            # 12: beyond the table's levels
            ep.in_flight = data.draw(st.sampled_from([0, 1, 2, 0, 1, 12]), label="in flight")
        steps[0] = data.draw(st.sampled_from([2e-6, 2e-6, 8e-6]), label="decision time")
        request = RequestInfo(
            data.draw(st.sampled_from(["GET", "get", "POST"]), label="method"),
            data.draw(st.sampled_from([0, 100]), label="body bytes"),
            data.draw(st.sampled_from([0.0, 1.0, 2.0, 9.0]), label="class"),  # 9: out of range
            True,
        )
        now += data.draw(st.sampled_from([0.0, 0.0, 2.0]), label="later")  # 2 s: past the cooldown
        # the first may score and fill cells (Python), the second reads them (C); the data plane
        # calls ``pick``, which has the table path inline
        for via_pick in (False, True):
            if via_pick:
                picked = [policies[f].pick(eps, request, rngs[f], now) for f in (True, False)]
                a, b = policies[True].last, policies[False].last
                assert picked == [a.endpoint, b.endpoint]
            else:
                a, b = (policies[f].decide(eps, request, rngs[f], now) for f in (True, False))
            same(a, b)
    fast, slow = policies[True], policies[False]
    assert fast.table_hits == slow.table_hits
    assert fast.fallbacks == slow.fallbacks
    assert (fast.budget._count, fast.budget.open_until) == (slow.budget._count, slow.budget.open_until)
    assert durations[True] == durations[False]


def test_table_hits_are_decided_in_c(flight_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert predicted._decide_table is not None  # the suite requires the extension (test_fastpick.py)
    calls: list[Decision | None] = []
    real = predicted._decide_table

    def counting(*args: Any) -> Decision | None:
        out = real(*args)
        calls.append(out)
        return out

    monkeypatch.setattr(predicted, "_decide_table", counting)
    holder = ModelHolder()
    holder.swap(load_model(flight_model, max_batch=64, ood_tolerance=0.25))
    durations: list[float] = []
    p = make(holder, Store(snapshot([3, 1, 8], now=WALL)), True, durations, [2e-6], choices=0)
    eps = [Endpoint(f"b{i}", f"http://127.0.0.1:{9000 + i}") for i in range(3)]
    request = RequestInfo("GET", 0, 1.0, True)
    first = p.decide(eps, request, random.Random(1), NOW)  # binds the snapshot, scores, fills: Python
    second = p.decide(eps, request, random.Random(1), NOW)  # reads the cells: C
    assert len(calls) == 1 and calls[0] is second
    assert first.endpoint is second.endpoint and second.endpoint is not None and second.endpoint.id == "b1"
    assert second.predicted_s == first.predicted_s and p.table_hits == 1
    assert durations == [first.duration_s, second.duration_s]


def pair(flight_model: Path, queues: list[int], steps: list[float], **s: Any) -> dict[bool, PredictedPolicy]:
    holder = ModelHolder()
    holder.swap(load_model(flight_model, max_batch=64, ood_tolerance=0.25))
    store = Store(snapshot(queues, now=WALL))
    return {fast: make(holder, store, fast, [], steps, choices=0, **s) for fast in (True, False)}


def both(policies: dict[bool, PredictedPolicy], eps: list[Endpoint], now: float = NOW) -> Decision:
    request = RequestInfo("GET", 0, 1.0, True)
    a, b = (policies[f].decide(eps, request, random.Random(1), now) for f in (True, False))
    same(a, b)
    return a


def test_an_open_breaker_stops_table_hits_too(flight_model: Path) -> None:
    steps = [2e-6]
    policies = pair(flight_model, [3, 1, 8], steps)
    eps = [Endpoint(f"b{i}", f"http://127.0.0.1:{9000 + i}") for i in range(3)]
    assert both(policies, eps).fallback is None  # fills the cells
    steps[0] = 8e-6  # over the 5-us budget
    assert [both(policies, eps).fallback for _ in range(2)] == [None, None]  # table hits, slow
    steps[0] = 2e-6
    # the fourth decision fills the breaker's window of 4, which held two slow ones: it opens
    assert both(policies, eps).fallback is None
    assert both(policies, eps).fallback == "slow"
    assert both(policies, eps, NOW + 2.0).fallback is None  # past the 1-s cooldown


def test_the_in_flight_penalty_applies_on_table_hits(flight_model: Path) -> None:
    # b1's queue is 5 longer and b0 has one request in flight: predictions 1.15 ** 4 = 1.75 apart;
    # a penalty of 1 doubles b0's cost (2 > 1.75: b1 wins), one that counted a request too many
    # would triple it against b1's doubled cost (3 < 3.5: b0)
    policies = pair(flight_model, [2, 7], [2e-6], inflight_penalty=1.0)
    eps = [Endpoint(f"b{i}", f"http://127.0.0.1:{9000 + i}") for i in range(2)]
    eps[0].in_flight = 1
    for _ in range(2):  # scored, then read from the table
        d = both(policies, eps)
        assert d.endpoint is eps[1] and d.fallback is None
        assert d.runner_up_s < d.predicted_s  # b0 predicted faster, but costlier with its penalty
    assert policies[True].table_hits == 1


def test_c_refuses_a_decision_class_it_cannot_fill(flight_model: Path) -> None:
    """The C path stores ``Decision``'s eight fields at its slots' offsets, skipping the generated
    ``__init__``: a class with other slots, or a ``__post_init__`` that would be skipped, is refused."""
    from proxy.balancer import _fastpick

    policies = pair(flight_model, [3, 1], [2e-6])
    eps = [Endpoint(f"b{i}", f"http://127.0.0.1:{9000 + i}") for i in range(2)]
    both(policies, eps)  # fills the cells
    plan = policies[True]._plan
    assert plan is not None and plan[-1] is Decision

    @dataclass(slots=True)
    class Seven:  # one field short
        endpoint: Any
        predicted_s: float
        runner_up: Any
        runner_up_s: float
        fallback: Any
        duration_s: float
        scored: Any

    @dataclass(slots=True)
    class Checked(Decision):
        def __post_init__(self) -> None:
            pass

    request = RequestInfo("GET", 0, 1.0, True)
    for other, reason in ((Seven, "eight slots"), (Checked, "__post_init__")):
        with pytest.raises(TypeError, match=reason):
            _fastpick.decide((*plan[:-1], other), eps, request, NOW, 0.0)
    assert _fastpick.decide(plan, eps, request, NOW, 0.0).__class__ is Decision  # still serves
