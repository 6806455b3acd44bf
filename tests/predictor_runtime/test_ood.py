import numpy as np
import pytest

from predictor_runtime.bundle import FeatureRange
from predictor_runtime.ood import RangeGuard

RANGES = {
    "host_cpu_util": FeatureRange(0.0, 1.0, 0.05, 0.95),
    "app_queue_length": FeatureRange(0.0, 10.0, 0.0, 8.0),
    "app_workers": FeatureRange(4.0, 4.0, 4.0, 4.0),
}


def rows(*values: tuple[float, float, float]) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def test_inputs_within_the_tolerated_range_pass() -> None:
    guard = RangeGuard(RANGES, tolerance=0.25)
    assert guard.check(rows((0.5, 3, 4), (1.25, 12.5, 4), (-0.25, -2.5, 4.9))) == (True, None)


def test_the_worst_offending_feature_is_named() -> None:
    guard = RangeGuard(RANGES, tolerance=0.25)
    assert guard.check(rows((0.5, 3, 4), (1.3, 3, 4))) == (False, "host_cpu_util")
    # queue 40 is 3 spans beyond, cpu 1.5 only a quarter: the queue is the worst
    assert guard.check(rows((1.5, 40, 4))) == (False, "app_queue_length")


def test_constant_training_features_get_slack_relative_to_their_value() -> None:
    guard = RangeGuard(RANGES, tolerance=0.25)
    assert guard.check(rows((0.5, 3, 5.0)))[0]
    assert guard.check(rows((0.5, 3, 5.1))) == (False, "app_workers")


def test_nan_is_never_in_range() -> None:
    guard = RangeGuard(RANGES, tolerance=10.0)
    assert guard.check(rows((0.5, np.nan, 4))) == (False, "app_queue_length")


def test_zero_tolerance_accepts_the_exact_bounds() -> None:
    guard = RangeGuard(RANGES, tolerance=0.0)
    assert guard.check(rows((0.0, 10.0, 4.0), (1.0, 0.0, 4.0)))[0]
    assert not guard.check(rows((1.0001, 0.0, 4.0)))[0]
    with pytest.raises(ValueError):
        RangeGuard(RANGES, tolerance=-1)
