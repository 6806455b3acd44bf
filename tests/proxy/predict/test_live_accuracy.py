import pytest

from proxy.predict.live_accuracy import LiveAccuracy


def test_accuracy_is_one_minus_mape_over_the_window() -> None:
    acc = LiveAccuracy(window=4, min_observations=2)
    assert acc.accuracy() is None
    acc.record(0.011, 0.010)  # 10 %
    assert acc.accuracy() is None  # fewer than min_observations
    acc.record(0.008, 0.010)  # 20 %
    assert acc.accuracy() == pytest.approx(1 - 0.15)
    for _ in range(4):  # the window forgets the old errors
        acc.record(0.010, 0.010)
    assert acc.accuracy() == pytest.approx(1.0)
    assert acc.total == 6


def test_one_pathological_observation_is_clipped() -> None:
    acc = LiveAccuracy(window=10, min_observations=1, max_ape=2.0)
    assert acc.record(100.0, 0.01) == 2.0
    for _ in range(9):
        acc.record(0.01, 0.01)
    assert acc.accuracy() == pytest.approx(0.8)


@pytest.mark.parametrize(("pred", "obs"), [(0.01, 0.0), (float("nan"), 0.01), (0.01, float("inf"))])
def test_unusable_observations_are_ignored(pred: float, obs: float) -> None:
    acc = LiveAccuracy(window=4, min_observations=1)
    assert acc.record(pred, obs) is None
    assert acc.count == 0


def test_reset_starts_afresh() -> None:
    acc = LiveAccuracy(window=4, min_observations=1)
    acc.record(0.02, 0.01)
    acc.reset()
    assert acc.accuracy() is None
    acc.record(0.01, 0.01)
    assert acc.accuracy() == 1.0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        LiveAccuracy(window=0)
    with pytest.raises(ValueError, match="min_observations"):
        LiveAccuracy(window=5, min_observations=6)
