"""Prediction tables answer exactly as scoring the model directly would.

Models exported by the training zoo (ridge, LightGBM, MLP) that read this proxy's in-flight count
are scored two ways on the same snapshots and endpoint states: through the policy (table lookups)
and directly (the assembler's rows through the Scorer's general path). Choices must be the same
and predictions equal up to float32 rounding.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from predict_fixtures import snapshot, write_queue_model

from predictor_runtime.bundle import FeatureRange
from predictor_runtime.ood import RangeGuard
from proxy.balancer.base import RequestInfo
from proxy.balancer.endpoint import Endpoint
from proxy.balancer.peak_ewma import PeakEwmaPolicy
from proxy.balancer.predicted import PredictedPolicy, PredictedSettings
from proxy.predict import assembler
from proxy.predict.model_holder import ModelHolder, load_model

NOW = 1000.0


@dataclass
class Store:
    snapshot: Any


def holder_for(bundle: Path, ood_tolerance: float = 0.25) -> ModelHolder:
    h = ModelHolder()
    h.swap(load_model(bundle, max_batch=64, ood_tolerance=ood_tolerance))
    return h


def policy(holder: ModelHolder, store: Store, **settings: Any) -> PredictedPolicy:
    s = PredictedSettings(**{"choices": 0, "min_budget_s": 1.0, **settings})
    return PredictedPolicy(holder=holder, features=store, fallback=PeakEwmaPolicy(), settings=s)


def direct(p: PredictedPolicy, eps: list[Endpoint], request: RequestInfo) -> list[float]:
    """What scoring the model on these candidates gives, without any table."""
    model, bound = p.holder.current, p._bound
    assert model is not None and bound is not None
    rows = [bound.row_of[ep.id] for ep in eps]
    x = np.zeros((len(rows), len(model.feature_names)), dtype=np.float32)  # not a bound buffer
    assert assembler.fill(bound, rows, eps, request, NOW, p.wall_clock(), x) is None
    return [float(v) for v in model.scorer.score(x)]


@pytest.fixture(scope="module", params=["ridge", "lgbm", "mlp"])
def bundle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    family = str(request.param)
    return write_queue_model(tmp_path_factory.mktemp(family), in_flight=True, family=family)


def test_tables_choose_as_direct_scoring(bundle: Path) -> None:
    rng = np.random.default_rng(3)
    eps = [Endpoint(f"b{i}", f"http://127.0.0.1:{9000 + i}") for i in range(8)]
    store = Store(snapshot(rng.integers(0, 21, 8).tolist()))
    p = policy(holder_for(bundle), store)
    for trial in range(300):
        if trial % 100 == 99:  # a new snapshot: new tables
            store.snapshot = snapshot(rng.integers(0, 21, 8).tolist())
        for ep in eps:
            ep.in_flight = int(rng.integers(0, 11))
        request = RequestInfo("GET", 0, float(rng.integers(0, 3)), True)
        d = p.decide(eps, request, random.Random(trial), NOW)
        assert d.fallback is None
        assert p._bound is not None and p._bound.levels > 1  # kept in a table
        want = direct(p, eps, request)
        assert d.preds == pytest.approx(want, rel=1e-5)
        assert d.endpoint is eps[int(np.argmin(want))]
    assert p.table_hits > 50  # lookups, once every candidate's count had been scored on this snapshot


def test_prefilled_tables_answer_as_direct_scoring(bundle: Path) -> None:
    rng = np.random.default_rng(5)
    eps = [Endpoint(f"b{i}", f"http://127.0.0.1:{9000 + i}") for i in range(6)]
    queues = rng.integers(0, 21, 6).tolist()
    store = Store(snapshot(queues))
    p = policy(holder_for(bundle), store)
    prefilled = 0
    for trial in range(200):
        if trial % 5 == 4:  # an agent update changes one backend's inputs; prefill runs between requests
            queues[int(rng.integers(0, 6))] = int(rng.integers(0, 21))
            store.snapshot = snapshot(queues)
            prefilled += p.prefill()
        for ep in eps:
            ep.in_flight = int(rng.integers(0, 4))
        request = RequestInfo("GET", 0, float(rng.integers(0, 3)), True)
        d = p.decide(eps, request, random.Random(trial), NOW)
        want = direct(p, eps, request)
        assert d.fallback is None and d.preds == pytest.approx(want, rel=1e-5)
        assert d.endpoint is eps[int(np.argmin(want))]
    assert prefilled > 0 and p.table_hits > 150  # most decisions read cells prefill had scored


def test_a_random_few_are_looked_up_as_they_are_scored(bundle: Path) -> None:
    rng = np.random.default_rng(4)
    eps = [Endpoint(f"b{i}", f"http://127.0.0.1:{9000 + i}") for i in range(40)]
    p = policy(holder_for(bundle), Store(snapshot(rng.integers(0, 21, 40).tolist())), choices=3)
    request = RequestInfo("GET", 0, 1.0, True)
    for trial in range(100):
        for ep in eps:
            ep.in_flight = int(rng.integers(0, 11))
        d = p.decide(eps, request, random.Random(trial), NOW)
        scored = list(d.scored)
        assert len(scored) == 3 and len({ep.id for ep in scored}) == 3
        want = direct(p, scored, request)
        assert d.preds == pytest.approx(want, rel=1e-5)
        assert d.endpoint is scored[int(np.argmin(want))]
    assert p.table_hits > 0


def test_counts_beyond_the_table_are_scored_directly(tmp_path: Path) -> None:
    # a wide range guard accepts in-flight counts far beyond MAX_LEVELS: those are scored directly
    h = holder_for(write_queue_model(tmp_path / "m", in_flight=True), ood_tolerance=100.0)
    eps = [Endpoint(f"b{i}", f"http://127.0.0.1:{9000 + i}") for i in range(3)]
    p = policy(h, Store(snapshot([1, 2, 3])))
    for ep, n in zip(eps, (assembler.MAX_LEVELS + 5, 3, 0), strict=True):
        ep.in_flight = n
    request = RequestInfo("GET", 0, 1.0, True)
    d = p.decide(eps, request, random.Random(1), NOW)
    assert p._bound is not None and p._bound.levels == assembler.MAX_LEVELS
    assert d.fallback is None and d.preds == pytest.approx(direct(p, eps, request), rel=1e-5)


def test_a_filled_table_never_answers_for_a_stale_or_unknown_backend(tmp_path: Path) -> None:
    # the table path checks freshness per decision: cells scored while a vector was fresh must not
    # answer once it is stale, nor for a candidate the snapshot has no row for
    clock = [1_000_000.0]
    h = holder_for(write_queue_model(tmp_path / "m", in_flight=True))
    store = Store(snapshot([1, 2], now=clock[0]))
    p = PredictedPolicy(holder=h, features=store, fallback=PeakEwmaPolicy(),
                        settings=PredictedSettings(choices=0, min_budget_s=1.0, stale_after_s=3.0),
                        wall_clock=lambda: clock[0])  # fmt: skip
    eps = [Endpoint("b0", "http://127.0.0.1:9000"), Endpoint("b1", "http://127.0.0.1:9001")]
    request = RequestInfo("GET", 0, 1.0, True)
    assert p.decide(eps, request, random.Random(1), NOW).fallback is None  # scores and fills the cells
    hits = p.table_hits
    assert p.decide(eps, request, random.Random(1), NOW).fallback is None and p.table_hits == hits + 1
    clock[0] += 2.95  # vectors sampled 0.1 s before the snapshot: 3.05 s old now
    assert p.decide(eps, request, random.Random(1), NOW).fallback == "stale"
    assert p.table_hits == hits + 1
    clock[0] -= 2.95
    stranger = Endpoint("b9", "http://127.0.0.1:9009")
    assert p.decide([eps[0], stranger], request, random.Random(1), NOW).fallback == "stale"
    assert p.decide(eps, request, random.Random(1), NOW).fallback is None and p.table_hits == hits + 2


def test_a_request_kind_out_of_range_is_counted_every_time(tmp_path: Path) -> None:
    p = policy(holder_for(write_queue_model(tmp_path / "m", in_flight=True)), Store(snapshot([1, 2])))
    eps = [Endpoint("b0", "http://127.0.0.1:9000"), Endpoint("b1", "http://127.0.0.1:9001")]
    odd = RequestInfo("GET", 0, 9.0, True)  # classes 0..2 in training
    assert [p.decide(eps, odd, random.Random(1), NOW).fallback for _ in range(3)] == ["ood"] * 3
    assert p.ood_features == {"req_class": 3}
    assert p.decide(eps, RequestInfo("GET", 0, 1.0, True), random.Random(1), NOW).fallback is None


def test_continuous_local_inputs_are_never_tabulated() -> None:
    def levels(names: tuple[str, ...]) -> int:
        ranges = {n: FeatureRange(0.0, 10.0, 0.0, 10.0) for n in names}
        snap = snapshot([1.0])
        bound = assembler.bind(names, RangeGuard(ranges, 0.25), snap.names, snap.backend_ids, snap.matrix,
                               snap.sample_ts)  # fmt: skip
        return bound.levels

    assert levels(("app_queue_length", "req_class")) == 1
    assert levels(("app_queue_length", "proxy_in_flight")) == 13  # 0..12: the guard accepts <= 12.5
    assert levels(("app_queue_length", "proxy_in_flight", "proxy_ewma_s")) == 0
    assert levels(("app_queue_length", "proxy_feature_age_s")) == 0


def test_a_layout_is_reused_for_the_same_shape_and_rebuilt_for_another() -> None:
    names = ("app_queue_length", "proxy_in_flight", "backend=b0", "backend=b1", "backend=b2")
    ranges = {n: FeatureRange(0.0, 20.0, 0.0, 20.0) for n in names}
    guard = RangeGuard(ranges, 0.25)

    def bound_for(snap: Any, layout: assembler.Layout | None) -> assembler.BoundInputs:
        return assembler.bind(names, guard, snap.names, snap.backend_ids, snap.matrix, snap.sample_ts,
                              layout=layout)  # fmt: skip

    first = snapshot([1, 2, 3])
    old = bound_for(first, None)
    again = bound_for(snapshot([4, 2, 3], ids=first.backend_ids), old.layout)
    assert again.layout is old.layout and again.row_of is old.row_of
    assert again.base[:, 0].tolist() == [4, 2, 3] and again.base[:, 2:].tolist() == np.eye(3).tolist()
    assert assembler.unchanged_rows(old, again) == [-1, 1, 2]  # only b0's inputs changed
    # another set of backends: a new layout, each row with its own identity input
    other = bound_for(snapshot([5, 6], ids=("b2", "b0")), old.layout)
    assert other.layout is not old.layout and other.row_of == {"b2": 0, "b0": 1}
    assert other.base[:, 2:].tolist() == [[0, 0, 1], [1, 0, 0]]
    assert assembler.unchanged_rows(old, other) == [-1, -1]  # b2 and b0 moved and changed
    moved = bound_for(snapshot([3, 1], ids=("b2", "b0")), old.layout)
    assert assembler.unchanged_rows(old, moved) == [2, 0]  # moved, inputs unchanged: tables carry
