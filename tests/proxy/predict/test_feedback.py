"""Feedback applied in batches leaves the policy and the metrics exactly as per-try calls do."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.balancer.endpoint import Endpoint
from proxy.balancer.peak_ewma import PeakEwmaPolicy
from proxy.balancer.predicted import Decision, PredictedPolicy, PredictedSettings
from proxy.metrics import Metrics
from proxy.predict.decision_budget import MEDIAN_BATCH
from proxy.predict.feedback import Feedback
from proxy.predict.live_accuracy import LiveAccuracy
from proxy.predict.model_holder import ModelHolder


class NoFeatures:
    snapshot = None


B1, B2 = Endpoint("b1", "http://127.0.0.1:1"), Endpoint("b2", "http://127.0.0.1:2")


def decided(predicted_s: float, ep: Endpoint = B1) -> Decision:
    return Decision(ep, predicted_s=predicted_s)


def fresh_policy() -> PredictedPolicy:
    # the level refit is off: per-try calls refit it every few tries, batches once a batch (its own
    # tests are below), and this compares what batching does to everything else
    settings = PredictedSettings(accuracy_window=50, min_observations=5, calibration_window=0)
    return PredictedPolicy(
        holder=ModelHolder(), features=NoFeatures(), fallback=PeakEwmaPolicy(), settings=settings
    )


def tries(n: int, seed: int) -> list[tuple[float, float]]:
    """(prediction, RTT) pairs with the odd unusable one: no prediction, a zero RTT, a wild miss."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        rtt = rng.choice([rng.uniform(0.001, 0.05), 0.0]) if rng.random() < 0.05 else rng.uniform(0.001, 0.05)
        pred = math.nan if rng.random() < 0.1 else rtt * rng.uniform(0.2, 30.0)
        out.append((pred, rtt))
    return out


@given(st.integers(1, 400), st.integers(1, 100), st.integers(0, 10_000))
def test_batches_give_what_per_try_calls_give(n: int, size: int, seed: int) -> None:
    one, batched = fresh_policy(), fresh_policy()
    m1, m2 = Metrics(), Metrics()
    feedback = Feedback(batched, m2.batched_prediction_error, size=size)
    for pred, rtt in tries(n, seed):
        ape = one.observe(pred, rtt, True)
        if ape is not None:
            m1.batched_prediction_error.observe(ape)
        feedback.add(decided(pred), rtt)
    feedback.flush()
    assert batched.accuracy.count == one.accuracy.count and batched.accuracy.total == one.accuracy.total
    assert batched.accuracy.value == pytest.approx(one.accuracy.accuracy(), abs=1e-9)
    assert batched.accuracy.accuracy() == pytest.approx(one.accuracy.accuracy(), abs=1e-9)
    if size < MEDIAN_BATCH:  # larger batches set the median to their own (test_decision_budget)
        assert batched.budget.median_rtt_s == one.budget.median_rtt_s
        assert batched.budget.budget_s == one.budget.budget_s
    h1, h2 = m1.batched_prediction_error, m2.batched_prediction_error
    assert h2.counts == h1.counts and h2.total == pytest.approx(h1.total, rel=1e-9)


def test_pending_feedback_reaches_the_histogram_before_a_scrape() -> None:
    metrics = Metrics()
    policy = fresh_policy()
    feedback = Feedback(policy, metrics.batched_prediction_error, size=64)
    metrics.before_flush.append(feedback.flush)
    for _ in range(3):
        feedback.add(decided(0.011), 0.010)
    assert b"presage_prediction_error_ratio_count 3.0" in metrics.render()
    assert policy.accuracy.count == 3


def test_a_window_overrun_by_one_batch_keeps_its_last_entries() -> None:
    acc, ref = LiveAccuracy(window=4, min_observations=1), LiveAccuracy(window=4, min_observations=1)
    acc.record(0.02, 0.01)  # one old error of 100 %, pushed out by the batch
    ref.record(0.02, 0.01)
    pred = np.array([0.011, 0.012, 0.009, 0.010, 0.013, 0.010])
    obs = np.full(6, 0.010)
    acc.record_many(pred, obs)
    for p_, o in zip(pred, obs, strict=True):
        ref.record(float(p_), float(o))
    assert acc.count == 4 and acc.value == pytest.approx(ref.accuracy()) == pytest.approx(
        0.9
    )  # 10, 0, 30, 0 %
    acc.reset()
    assert acc.value is None and acc.accuracy() is None


def test_a_model_swap_applies_pending_feedback_to_the_old_window_then_resets() -> None:
    policy = fresh_policy()
    for _ in range(10):
        policy.feedback.add(decided(0.010), 0.010)
    assert policy.accuracy.count == 0  # still pending
    policy.holder.swap(None)
    assert policy.accuracy.count == 0 and policy.accuracy.total == 10 and policy.feedback.pending == 0


def test_the_latest_scored_prediction_per_backend_is_kept_for_the_gauge() -> None:
    policy = fresh_policy()
    feedback = Feedback(policy, None, size=4)
    for pred, ep, rtt in [(0.010, B1, 0.01), (0.020, B2, 0.01), (0.011, B1, 0.01), (math.nan, B1, 0.01)]:
        feedback.add(decided(pred, ep), rtt)  # the fourth fills the batch: applied now
    assert feedback.latest == {"b1": 0.011, "b2": 0.020}  # a NaN (not scored) changes nothing
    feedback.add(decided(0.030, B2), 0.0)  # no usable RTT: no evidence either
    feedback.add(decided(0.012, B1), 0.01)
    assert feedback.latest == {"b1": 0.011, "b2": 0.020}  # pending until the next flush
    feedback.flush()
    assert feedback.latest == {"b1": 0.012, "b2": 0.020}


def calibrated_policy(window: int) -> PredictedPolicy:
    settings = PredictedSettings(accuracy_window=50, min_observations=5, calibration_window=window)
    return PredictedPolicy(
        holder=ModelHolder(), features=NoFeatures(), fallback=PeakEwmaPolicy(), settings=settings
    )


def test_live_accuracy_scores_each_batch_at_the_level_refitted_before_it() -> None:
    """A model that predicts half the RTT everywhere: its first batch is scored as it is (50 %
    error), the refit then doubles its level, and the next batch is scored exact."""
    policy = calibrated_policy(20)
    feedback = Feedback(policy, None, size=10)
    for _ in range(10):
        feedback.add(decided(0.010), 0.020)
    assert policy.calibration.scale == pytest.approx(2.0)
    assert policy.accuracy.accuracy() == pytest.approx(0.5)
    for _ in range(10):
        feedback.add(decided(0.010, B2), 0.020)
    assert policy.accuracy.accuracy() == pytest.approx(0.75)  # 10 errors of 50 %, 10 of 0
    # the gauge: each backend's latest prediction at the level of its batch
    assert feedback.latest == {"b1": pytest.approx(0.010), "b2": pytest.approx(0.020)}
    assert policy.describe(0.0)["calibration_scale"] == pytest.approx(2.0)
    policy.holder.swap(None)  # a new model has its own level
    assert policy.calibration.scale == 1.0 and policy.calibration.count == 0


def test_per_try_feedback_refits_the_level_too_and_a_zero_window_keeps_the_bundle_s() -> None:
    policy, off = calibrated_policy(16), calibrated_policy(0)
    for _ in range(40):  # the shadow policy's path: one ``observe`` per try
        policy.observe(0.010, 0.020, True)
        off.observe(0.010, 0.020, True)
    assert policy.calibration.scale == pytest.approx(2.0) and off.calibration.scale == 1.0
    assert policy.accuracy.accuracy() > 0.75 and off.accuracy.accuracy() == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"predicted\.calibration_window"):
        PredictedSettings(calibration_window=-1)
