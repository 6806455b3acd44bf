"""Window aggregates: the incremental sums and monotonic deque agree with a direct computation."""

import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics_agent import schema
from metrics_agent.windows import SlidingWindow, WindowSet


def _direct(points: list[tuple[float, float]], now: float, seconds: float) -> tuple[float, float, float]:
    inside = [(t, y) for t, y in points if t > now - seconds]
    ys = [y for _, y in inside]
    ts = [t for t, _ in inside]
    slope = statistics.linear_regression(ts, ys).slope if len(set(ts)) > 1 else 0.0
    return statistics.fmean(ys), max(ys), slope


def test_a_linear_series_has_its_slope_and_the_window_forgets_old_samples() -> None:
    w = SlidingWindow(5, 1)
    for i in range(100):  # y = 3 t + 7 sampled every 0.5 s for 50 s
        t = 1000.0 + 0.5 * i
        w.add(t, (3 * t + 7,))
    mean, top, slope = w.aggregates()[0]
    assert len(w) == 10  # only the last 5 s
    assert slope == pytest.approx(3.0)
    assert top == pytest.approx(3 * (1000.0 + 49.5) + 7)
    assert mean == pytest.approx(3 * (1000.0 + 49.5 - 2.25) + 7)


def test_one_sample_has_zero_slope_and_an_empty_window_is_all_zero() -> None:
    assert SlidingWindow(5, 2).aggregates() == [(0.0, 0.0, 0.0), (0.0, 0.0, 0.0)]
    w = SlidingWindow(5, 1)
    w.add(10.0, (4.0,))
    assert w.aggregates() == [(4.0, 4.0, 0.0)]


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.floats(0.05, 3.0), st.floats(-1e6, 1e6, allow_nan=False)), min_size=1, max_size=150
    ),
    seconds=st.sampled_from([1, 5, 20]),
)
def test_matches_a_direct_computation_over_the_same_window(
    steps: list[tuple[float, float]], seconds: int
) -> None:
    w = SlidingWindow(seconds, 1)
    points: list[tuple[float, float]] = []
    t = 5000.0  # a large origin: the sums must not lose precision to it
    for dt, y in steps:
        t += dt
        points.append((t, y))
        w.add(t, (y,))
        mean, top, slope = w.aggregates()[0]
        d_mean, d_top, d_slope = _direct(points, t, seconds)
        assert mean == pytest.approx(d_mean, rel=1e-6, abs=1e-3)
        assert top == d_top
        assert slope == pytest.approx(d_slope, rel=1e-5, abs=1e-2)


def test_window_set_lays_out_values_in_schema_order() -> None:
    windows = (5, 20)
    n = len(schema.BASE_METRICS)
    ws = WindowSet(windows, n)
    last = [float(i) for i in range(n)]
    ws.add(1.0, last)
    ws.add(2.0, [v + 1 for v in last])
    vec = ws.vector([v + 1 for v in last])
    names = schema.feature_names(windows)
    assert len(vec) == len(names)
    got = dict(zip(names, vec, strict=True))
    assert got["host_load1_per_core"] == 2.0
    assert got["host_load1_per_core.mean_5s"] == 1.5
    assert got["host_load1_per_core.max_20s"] == 2.0
    assert got["host_load1_per_core.slope_20s"] == pytest.approx(1.0)


def test_a_sample_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(ValueError, match="expected 2 values"):
        SlidingWindow(5, 2).add(1.0, (1.0,))
