"""The ``predicted`` policy on a real ONNX model: it routes by prediction, and every safeguard
falls back to peak-EWMA with its reason counted."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from predict_fixtures import snapshot, true_rtt, write_queue_model

from proxy.balancer.base import RequestInfo
from proxy.balancer.endpoint import Endpoint
from proxy.balancer.peak_ewma import PeakEwmaPolicy
from proxy.balancer.predicted import PredictedPolicy, PredictedSettings, sample_indices, two_lowest
from proxy.predict.model_holder import ModelHolder, load_model

REQ = RequestInfo("GET", 0, 1.0, True)
NOW = 1000.0  # the pool's monotonic clock


@dataclass
class Store:
    snapshot: Any


def endpoints(n: int) -> list[Endpoint]:
    return [Endpoint(f"b{i}", f"http://127.0.0.1:{9000 + i}") for i in range(n)]


def policy(holder: ModelHolder, store: Store, **settings: Any) -> PredictedPolicy:
    # a generous decision budget: these tests are about choices, and a loaded test machine can
    # take more than the default 50 us per decision (the breaker has its own test below)
    s = {"choices": 0, "min_budget_s": 0.01, **settings}
    return PredictedPolicy(
        holder=holder, features=store, fallback=PeakEwmaPolicy(), settings=PredictedSettings(**s)
    )


def test_routes_to_the_lowest_prediction_and_names_the_runner_up(holder: ModelHolder) -> None:
    store = Store(snapshot([8, 1, 15, 4]))
    p = policy(holder, store)
    d = p.decide(endpoints(4), REQ, random.Random(1), NOW)
    assert d.fallback is None
    assert d.endpoint is not None and d.endpoint.id == "b1"
    assert d.runner_up is not None and d.runner_up.id == "b3"
    assert d.predicted_s == pytest.approx(true_rtt(1), rel=0.15)
    assert d.predicted_s < d.runner_up_s
    assert d.duration_s > 0


def test_power_of_two_choices_never_picks_the_worst_and_spreads_over_the_rest(holder: ModelHolder) -> None:
    store = Store(snapshot([0, 1, 2, 20]))
    p = policy(holder, store, choices=2)
    eps = endpoints(4)
    rng = random.Random(7)
    counts: dict[str, int] = {}
    for _ in range(600):
        ep = p.pick(eps, REQ, rng, NOW)
        assert ep is not None
        counts[ep.id] = counts.get(ep.id, 0) + 1
    assert counts.get("b3", 0) == 0  # the slowest loses every pair it is in
    assert 0.4 < counts["b0"] / 600 < 0.6  # best wins the half of pairs it is drawn into: no herd
    assert counts["b2"] > 0


def test_in_flight_penalty_moves_load_off_a_busy_backend(holder: ModelHolder) -> None:
    store = Store(snapshot([1, 2]))
    eps = endpoints(2)
    eps[0].in_flight = 10
    assert policy(holder, store).pick(eps, REQ, random.Random(1), NOW) is eps[0]
    assert policy(holder, store, inflight_penalty=0.5).pick(eps, REQ, random.Random(1), NOW) is eps[1]


def test_no_model_falls_back(holder: ModelHolder) -> None:
    p = policy(ModelHolder(), Store(snapshot([1, 2])))
    d = p.decide(endpoints(2), REQ, random.Random(1), NOW)
    assert d.fallback == "no_model" and d.endpoint is not None
    assert p.fallbacks["no_model"] == 1


@pytest.mark.parametrize(
    ("snap", "reason"),
    [
        (lambda: None, "stale"),  # no snapshot at all yet
        (lambda: snapshot([1, 2], age_s=60.0), "stale"),  # vectors older than stale_after_s
        (lambda: snapshot([1], ids=["b0"]), "stale"),  # a candidate without any vector
        (lambda: snapshot([1, 500]), "ood"),  # a queue far beyond anything seen in training
    ],
)
def test_untrustworthy_inputs_fall_back_with_their_reason(
    holder: ModelHolder, snap: Any, reason: str
) -> None:
    calls: list[str] = []
    p = PredictedPolicy(
        holder=holder, features=Store(snap()), fallback=PeakEwmaPolicy(), on_fallback=calls.append
    )
    d = p.decide(endpoints(2), REQ, random.Random(1), NOW)
    assert d.fallback == reason and d.endpoint is not None
    assert calls == [reason] and p.fallbacks[reason] == 1
    if reason == "ood":  # and which input was out of range
        assert p.describe(NOW)["ood_features"] == {"app_queue_length": 1}


def test_low_live_accuracy_falls_back_and_recovers_by_itself(holder: ModelHolder) -> None:
    store = Store(snapshot([1, 2]))
    p = policy(holder, store, accuracy_window=20, min_observations=10, min_accuracy=0.6)
    eps = endpoints(2)
    rng = random.Random(3)
    for _ in range(20):  # the backend behaves 10x slower than predicted: accuracy ~0
        d = p.decide(eps, REQ, rng, NOW)
        p.observe(d.predicted_s, d.predicted_s * 10, True)
    d = p.decide(eps, REQ, rng, NOW)
    assert d.fallback == "accuracy"
    # still scored while falling back, so accurate observations lift the safeguard again
    assert d.predicted_s == d.predicted_s
    for _ in range(20):
        d = p.decide(eps, REQ, rng, NOW)
        p.observe(d.predicted_s, d.predicted_s * 1.05, True)
    assert p.decide(eps, REQ, rng, NOW).fallback is None


def test_failed_tries_are_not_accuracy_evidence(holder: ModelHolder) -> None:
    p = policy(holder, Store(snapshot([1, 2])), accuracy_window=20, min_observations=10)
    for _ in range(30):
        assert p.observe(0.005, 0.5, False) is None
    assert p.accuracy.count == 0


def test_slow_decisions_open_the_breaker(holder: ModelHolder) -> None:
    ticks: Iterator[float] = iter(float(i) * 1e-3 for i in range(10_000))  # every decision takes 1 ms
    p = PredictedPolicy(
        holder=holder,
        features=Store(snapshot([1, 2])),
        fallback=PeakEwmaPolicy(),
        settings=PredictedSettings(choices=0, budget_cooldown_s=5.0),
        perf_counter=lambda: next(ticks),
    )
    eps = endpoints(2)
    reasons = [p.decide(eps, REQ, random.Random(1), NOW).fallback for _ in range(250)]  # > one window
    assert reasons[0] is None and "slow" in reasons
    assert p.decide(eps, REQ, random.Random(1), NOW + 10.0).fallback is None  # cooled down: half-open


def test_a_model_swap_resets_live_accuracy(holder: ModelHolder) -> None:
    p = policy(holder, Store(snapshot([1, 2])), accuracy_window=20, min_observations=10)
    for _ in range(15):
        p.observe(0.005, 0.05, True)
    assert p.accuracy.accuracy() is not None
    holder.swap(holder.current)
    assert p.accuracy.accuracy() is None


def test_settings_name_the_bad_key() -> None:
    with pytest.raises(ValueError, match=r"predicted\.choices"):
        PredictedSettings(choices=1)
    with pytest.raises(ValueError, match=r"predicted\.budget_frac"):
        PredictedSettings(budget_frac=0.5)
    with pytest.raises(ValueError, match=r"predicted\.chioces: unknown key"):
        PredictedSettings.from_mapping({"chioces": 2})


def test_cached_tables_give_the_model_s_own_predictions(holder: ModelHolder) -> None:
    model = holder.current
    assert model is not None
    queues = [8.0, 1.0, 15.0, 4.0, 0.0, 20.0]
    p = policy(holder, Store(snapshot(queues)))
    d = p.decide(endpoints(6), REQ, random.Random(1), NOW)
    x = np.array([[q, REQ.req_class] for q in queues], dtype=np.float32)
    direct = model.scorer.score(x)
    assert d.preds == pytest.approx(direct.tolist(), rel=1e-6)
    assert len(p._tables) == 1  # one table for this kind of request ...
    p.decide(endpoints(6), RequestInfo("GET", 0, 2.0, True), random.Random(1), NOW)
    assert len(p._tables) == 2  # ... and one per other kind
    p.features = Store(snapshot(queues))  # a refresh with the same values keeps every cell ...
    hits = p.table_hits
    assert p.decide(endpoints(6), REQ, random.Random(1), NOW).preds == pytest.approx(
        direct.tolist(), rel=1e-6
    )
    assert len(p._tables) == 2 and p.table_hits == hits + 1
    changed = [*queues[:2], 12.0, *queues[3:]]
    p.features = Store(snapshot(changed))  # ... a change drops the changed backend's row only
    table = p._tables[(REQ.req_class,)]  # keyed by the request inputs the model reads: its class
    p._bind(model)
    fresh = p._tables[(REQ.req_class,)]
    assert fresh[2] is None and [row for i, row in enumerate(fresh) if i != 2] == [
        row for i, row in enumerate(table) if i != 2
    ]
    d = p.decide(endpoints(6), REQ, random.Random(1), NOW)  # a miss: scored afresh
    x[2, 0] = 12.0
    assert d.preds == pytest.approx(model.scorer.score(x).tolist(), rel=1e-6)


def test_a_model_reading_in_flight_answers_from_its_table(tmp_path: Any) -> None:
    holder = ModelHolder()
    bundle = write_queue_model(tmp_path / "m", in_flight=True)
    holder.swap(load_model(bundle, max_batch=64, ood_tolerance=0.25))
    p = policy(holder, Store(snapshot([1, 3])))
    eps = endpoints(2)
    assert p.pick(eps, REQ, random.Random(1), NOW) is eps[0]
    eps[0].in_flight = 5  # 1 + 5 queued here > 3 + 0 there: the model itself moves the load
    d = p.decide(eps, REQ, random.Random(1), NOW)
    assert d.endpoint is eps[1] and len(p._tables) == 1  # in-flight is a table index, not an input
    assert d.predicted_s == pytest.approx(true_rtt(3), rel=0.15)
    eps[0].in_flight = 50  # far beyond the in-flight counts seen in training
    assert p.decide(eps, REQ, random.Random(1), NOW).fallback == "ood"
    assert p.ood_features == {"proxy_in_flight": 1}


def test_a_model_blind_to_body_size_keeps_one_table_for_every_size(holder: ModelHolder) -> None:
    p = policy(holder, Store(snapshot([8, 1, 15, 4])))
    for size in (0, 512, 70_000):
        p.decide(endpoints(4), RequestInfo("POST", size, 1.0, False), random.Random(1), NOW)
    assert len(p._tables) == 1 and p.table_hits == 2


def test_prefill_scores_changed_rows_before_a_decision_needs_them(tmp_path: Any) -> None:
    holder = ModelHolder()
    bundle = write_queue_model(tmp_path / "m", in_flight=True)
    holder.swap(load_model(bundle, max_batch=64, ood_tolerance=0.25))
    model = holder.current
    assert model is not None
    store = Store(snapshot([1, 3, 2, 5]))
    p = policy(holder, store)
    assert p.prefill() == 0  # no request kind seen yet: nothing worth scoring
    eps = endpoints(4)
    p.decide(eps[:3], REQ, random.Random(1), NOW)  # decisions read b0..b2; b3 is never a candidate
    assert p.prefill() == 0  # nothing changed: nothing to score again
    store.snapshot = snapshot([1, 7, 2, 6])  # an agent update changes b1's and b3's inputs
    assert p.prefill() == 4  # b1's row at in-flight 0..3; b3's row was never read: left alone
    hits = p.table_hits
    eps[1].in_flight = 2
    d = p.decide(eps[:3], REQ, random.Random(1), NOW)
    assert p.table_hits == hits + 1  # answered from the table, no model call
    names = list(model.feature_names)
    x = np.zeros((3, len(names)), dtype=np.float32)
    x[:, names.index("app_queue_length")] = [1, 7, 2]
    x[:, names.index("req_class")] = REQ.req_class
    x[:, names.index("proxy_in_flight")] = [0, 2, 0]
    assert d.preds == pytest.approx(model.scorer.score(x).tolist(), rel=1e-6)  # the model's own
    assert p.prefill() == 0
    eps[0].in_flight = 5  # deeper than prefilled: scored by the decision, and prefill goes deeper
    p.decide(eps[:3], REQ, random.Random(1), NOW)
    store.snapshot = snapshot([2, 7, 2, 6])
    assert p.prefill() > 4


@given(st.lists(st.tuples(st.integers(0, 4).map(float), st.integers(0, 3)), min_size=2, max_size=9))
def test_the_two_lowest_are_those_a_stable_sort_by_cost_then_in_flight_gives(
    pairs: list[tuple[float, int]],
) -> None:
    costs = [c for c, _ in pairs]
    eps = endpoints(len(pairs))
    for ep, (_, n) in zip(eps, pairs, strict=True):
        ep.in_flight = n
    assert two_lowest(costs, eps) == tuple(sorted(range(len(pairs)), key=pairs.__getitem__)[:2])


@pytest.mark.parametrize("n", [2, 3])
def test_backends_the_model_cannot_tell_apart_go_to_the_least_loaded(holder: ModelHolder, n: int) -> None:
    """Equal predictions must not all land on the first backend listed (the pair has its own path)."""
    p = policy(holder, Store(snapshot([3] * n)))
    eps = endpoints(n)
    d = p.decide(eps, REQ, random.Random(1), NOW)
    assert d.endpoint is eps[0] and d.predicted_s == d.runner_up_s  # all idle: the first listed
    for ep, load in zip(eps, [4, 1, 1][:n], strict=True):
        ep.in_flight = load
    d = p.decide(eps, REQ, random.Random(1), NOW)
    assert d.endpoint is eps[1] and d.runner_up is eps[0 if n == 2 else 2]


@given(st.integers(2, 200), st.integers(2, 80), st.integers(0, 2**32))
def test_floyd_sampling_draws_distinct_indices_in_range(n: int, d: int, seed: int) -> None:
    picked = sample_indices(n, min(d, n), random.Random(seed).random)
    assert len(set(picked)) == len(picked) == min(d, n) and all(0 <= i < n for i in picked)


def test_floyd_sampling_makes_every_subset_equally_likely() -> None:
    rng = random.Random(5)
    counts: dict[frozenset[int], int] = {}
    for _ in range(20_000):
        subset = frozenset(sample_indices(5, 2, rng.random))
        counts[subset] = counts.get(subset, 0) + 1
    assert len(counts) == 10 and all(1800 < c < 2200 for c in counts.values())  # 2,000 each


def test_floyd_sampling_of_many_makes_every_subset_equally_likely() -> None:
    rng = random.Random(6)  # nine of ten: the set-based branch, ten subsets (which one is left out)
    left_out = [0] * 10
    for _ in range(20_000):
        picked = sample_indices(10, 9, rng.random)
        assert len(set(picked)) == 9
        left_out[45 - sum(picked)] += 1
    assert all(1800 < c < 2200 for c in left_out)  # 2,000 each


def test_the_default_accuracy_floor_is_relative_to_the_bundles_held_out_accuracy(holder: ModelHolder) -> None:
    import dataclasses

    from predictor_runtime.bundle import load_bundle
    from predictor_runtime.scorer import Scorer
    from proxy.predict.min_accuracy import CALIBRATED_MIN_ACCURACY, DEFAULT_MIN_ACCURACY, DRIFT_TOLERANCE

    model = holder.current
    assert model is not None and model.accuracy is not None and model.scorer.scale == 1.0
    p = policy(holder, Store(snapshot([8, 1, 15, 4])))
    assert p.describe(NOW)["min_accuracy"] == pytest.approx(model.accuracy - DRIFT_TOLERANCE)
    # a bundle that carries no held-out accuracy gets the simulator's floor, in the units live
    # accuracy is measured in: the MAPE-optimal level when the proxy refits it (the default) ...
    raw = policy(holder, Store(snapshot([8, 1, 15, 4])), calibration_window=0)
    holder.swap(dataclasses.replace(model, accuracy=None))
    assert p.describe(NOW)["min_accuracy"] == CALIBRATED_MIN_ACCURACY
    assert raw.describe(NOW)["min_accuracy"] == DEFAULT_MIN_ACCURACY  # ... the model's own without the refit
    bundle = load_bundle(model.path)
    scaled = Scorer(bundle.onnx, bundle.feature_names, bundle.transform, scale=0.7)  # as train ships
    holder.swap(dataclasses.replace(model, accuracy=None, scorer=scaled))  # calibrated by training
    assert p.describe(NOW)["min_accuracy"] == raw.describe(NOW)["min_accuracy"] == CALIBRATED_MIN_ACCURACY
    # a configured floor is absolute; 0 turns the safeguard off
    assert policy(holder, Store(snapshot([1])), min_accuracy=0.3).describe(NOW)["min_accuracy"] == 0.3
    assert policy(holder, Store(snapshot([1])), min_accuracy=0.0).describe(NOW)["min_accuracy"] is None


def test_a_model_that_reads_in_flight_scores_every_candidate_others_sample_three(
    holder: ModelHolder, tmp_path: Any
) -> None:
    store = Store(snapshot([8, 1, 15, 4, 9, 12]))
    blind = PredictedPolicy(holder=holder, features=store, fallback=PeakEwmaPolicy(),
                            settings=PredictedSettings(min_budget_s=0.01))  # fmt: skip
    d = blind.decide(endpoints(6), REQ, random.Random(1), NOW)
    assert d.fallback is None and len(d.scored) == 3  # sees nothing move: the power of 3 choices
    seeing = ModelHolder()
    bundle = write_queue_model(tmp_path / "m", in_flight=True)
    seeing.swap(load_model(bundle, max_batch=64, ood_tolerance=0.25))
    aware = PredictedPolicy(holder=seeing, features=store, fallback=PeakEwmaPolicy(),
                            settings=PredictedSettings(min_budget_s=0.01))  # fmt: skip
    d = aware.decide(endpoints(6), REQ, random.Random(1), NOW)
    assert d.fallback is None and len(d.scored) == 6 and d.endpoint is not None and d.endpoint.id == "b1"
    # an explicit setting wins either way
    sampled = PredictedPolicy(holder=seeing, features=store, fallback=PeakEwmaPolicy(),
                              settings=PredictedSettings(choices=2, min_budget_s=0.01))  # fmt: skip
    assert len(sampled.decide(endpoints(6), REQ, random.Random(1), NOW).scored) == 2
