"""The live refit of a model's level: the MAPE-optimal factor over a window, and its causal replay."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from predictor_runtime.calibration import SCALE_BOUNDS, LevelCalibration, mape_scale, replay
from predictor_runtime.train.assess import accuracy_metrics


def pairs(n: int, seed: int, level: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pred = rng.uniform(0.002, 0.05, n)
    return pred, pred * level * np.exp(rng.normal(0.0, 0.2, n))


def test_the_scale_stays_one_until_enough_pairs_then_is_the_window_s_mape_optimum() -> None:
    pred, obs = pairs(300, 1)
    cal = LevelCalibration(100, min_observations=20)
    cal.record_many(pred[:19], obs[:19])
    assert cal.scale == 1.0 and cal.count == 19
    cal.record_many(pred[19:20], obs[19:20])
    assert cal.scale == mape_scale(obs[:20], pred[:20])
    cal.record_many(pred[20:], obs[20:])  # the window keeps the last 100
    assert cal.count == 100 and cal.scale == mape_scale(obs[-100:], pred[-100:])
    assert 1.2 < cal.scale < 1.6  # the level the observations carry, pulled down by MAPE's 1/RTT weights


@given(st.integers(1, 600), st.integers(1, 90), st.integers(0, 1000))
def test_batches_of_any_size_fit_the_same_window_as_single_records(n: int, batch: int, seed: int) -> None:
    pred, obs = pairs(n, seed)
    pred[::7] = np.nan  # unusable pairs are skipped by both
    obs[::11] = 0.0
    one, many = LevelCalibration(64, min_observations=8), LevelCalibration(64, min_observations=8)
    for p, o in zip(pred, obs, strict=True):
        one.record(float(p), float(o))
    for start in range(0, n, batch):
        many.record_many(pred[start : start + batch], obs[start : start + batch])
    assert one.count == many.count
    one._refit()  # ``record`` refits every ``refit_every`` pairs; compare at the same point
    assert one.scale == many.scale
    usable = np.isfinite(pred) & (obs > 0)
    if usable.sum() >= 8:
        assert many.scale == mape_scale(obs[usable][-64:], pred[usable][-64:])


def test_unusable_pairs_are_not_evidence_and_the_factor_is_clipped() -> None:
    cal = LevelCalibration(10, min_observations=1)
    for p, o in [(math.nan, 0.01), (0.01, 0.0), (-1.0, 0.01), (math.inf, 0.01), (0.01, math.nan)]:
        cal.record(p, o)
    cal.record_many(np.array([math.nan, 0.01]), np.array([0.01, -0.01]))
    assert cal.count == 0 and cal.scale == 1.0
    cal.record_many(np.full(5, 0.001), np.full(5, 1.0))  # a thousand times slower: a broken fit
    assert cal.scale == SCALE_BOUNDS[1]
    cal.reset()
    assert cal.count == 0 and cal.scale == 1.0


def test_a_zero_window_is_off_and_bad_arguments_are_refused() -> None:
    off = LevelCalibration(0)
    off.record(0.01, 0.02)
    off.record_many(np.full(100, 0.01), np.full(100, 0.02))
    assert off.scale == 1.0 and off.count == 0
    with pytest.raises(ValueError, match="window"):
        LevelCalibration(-1)
    with pytest.raises(ValueError, match="min_observations"):
        LevelCalibration(10, min_observations=11)


def test_replay_uses_only_requests_completed_before_each_dispatch() -> None:
    # ten requests of 1 s dispatched 0.1 s apart overlap: none has completed when the last is sent
    ts = np.arange(10) * 0.1
    rtt = np.ones(10)
    pred = np.full(10, 0.5)
    assert np.array_equal(replay(ts, rtt, pred, window=10, min_observations=1), pred)
    # the same requests sent 2 s apart: from the second on, each sees the ones before it
    out = replay(np.arange(10) * 2.0, rtt, pred, window=10, min_observations=1)
    assert out[0] == 0.5 and np.allclose(out[1:], 1.0)
    # dispatch order is what counts, not the order of the rows
    order = np.array([3, 0, 9, 1, 5, 2, 8, 4, 7, 6])
    shuffled = replay(np.arange(10)[order] * 2.0, rtt, pred, window=10, min_observations=1)
    assert np.array_equal(shuffled, out[order])
    with pytest.raises(ValueError, match="same length"):
        replay(ts, rtt[:5], pred)


def test_replay_follows_a_level_shift_the_bundle_does_not_know() -> None:
    rng = np.random.default_rng(3)
    n = 2000
    ts = np.cumsum(rng.exponential(0.05, n))
    pred = rng.uniform(0.005, 0.02, n)  # the model's shape is right ...
    level = np.where(np.arange(n) < n // 2, 1.0, 1.6)  # ... and the host gets 60 % slower halfway
    rtt = pred * level * np.exp(rng.normal(0.0, 0.1, n))
    exported = accuracy_metrics(rtt, pred)["accuracy"]
    refit = accuracy_metrics(rtt, replay(ts, rtt, pred))["accuracy"]
    assert exported < 0.8 and refit > 0.88
    # and it leaves a model whose level is right where it is, within the window's noise
    calm = pred * np.exp(rng.normal(0.0, 0.1, n))
    assert accuracy_metrics(calm, replay(ts, calm, pred))["accuracy"] == pytest.approx(
        accuracy_metrics(calm, pred)["accuracy"], abs=0.01
    )
