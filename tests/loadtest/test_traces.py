"""Traces keep to their definition; Poisson arrivals are seeded and as many as the trace promises."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadtest.traces import (
    ConstantTrace,
    DynamicTrace,
    StepTrace,
    Trace,
    draw_sizes,
    make_trace,
    parse_mix,
    poisson_arrivals,
)

GRID_POINTS = 20_000


def time_mean(trace: Trace) -> float:
    """Mean of rate_at over [0, duration) at the midpoints of a fine grid (the traces are
    piecewise constant, so this is their time average up to one grid cell per change)."""
    step = trace.duration_s / GRID_POINTS
    t = (np.arange(GRID_POINTS) + 0.5) * step
    return float(np.mean([trace.rate_at(x) for x in t.tolist()]))


def test_constant_trace_holds_its_rate() -> None:
    trace = ConstantTrace(120.0, 5.0)
    assert isinstance(trace, Trace)
    assert time_mean(trace) == pytest.approx(120.0)


def test_step_trace_is_low_then_high() -> None:
    trace = StepTrace(low=20.0, high=100.0, step_at_s=3.0, duration_s=10.0)
    assert trace.rate_at(2.999) == 20.0 and trace.rate_at(3.0) == 100.0
    assert time_mean(trace) == pytest.approx((20 * 3 + 100 * 7) / 10, rel=1e-3)


def test_dynamic_trace_redraws_its_level_every_period_within_bounds() -> None:
    trace = DynamicTrace(low=50.0, high=200.0, period_s=2.0, duration_s=11.0, seed=4)
    assert len(trace.levels) == 6  # the last, partial period has a level too
    for k, level in enumerate(trace.levels.tolist()):
        assert 50.0 <= level <= 200.0
        assert trace.rate_at(2.0 * k) == level == trace.rate_at(2.0 * k + 1.999)
    assert len(set(trace.levels.tolist())) == 6
    expected = float(trace.levels[:5].sum() * 2.0 + trace.levels[5] * 1.0) / 11.0
    assert time_mean(trace) == pytest.approx(expected, rel=1e-3)
    assert np.array_equal(DynamicTrace(50.0, 200.0, 2.0, 11.0, seed=4).levels, trace.levels)
    assert not np.array_equal(DynamicTrace(50.0, 200.0, 2.0, 11.0, seed=5).levels, trace.levels)


def test_dynamic_levels_average_the_midpoint() -> None:
    trace = DynamicTrace(low=5.0, high=180.0, period_s=10.0, duration_s=40_000.0, seed=1)
    # 4000 uniform draws: the standard error of their mean is (175/sqrt(12))/sqrt(4000) ~ 0.8
    assert float(trace.levels.mean()) == pytest.approx(92.5, abs=4.0)


@pytest.mark.parametrize("kind", ["constant", "step", "dynamic"])
def test_make_trace_offers_the_same_mean_for_every_kind(kind: str) -> None:
    trace = make_trace(kind, 40.0, 160.0, period_s=1.0, duration_s=2000.0, seed=2)
    assert trace.duration_s == 2000.0
    tolerance = 5.0 if kind == "dynamic" else 1e-6  # dynamic: 2000 uniform levels, se ~ 0.8
    assert time_mean(trace) == pytest.approx(100.0, abs=tolerance)


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: make_trace("sawtooth", 1, 2), "sawtooth"),
        (lambda: make_trace("step", 5, 2), "high_rps"),
        (lambda: make_trace("constant", -1, 2), "low_rps"),
        (lambda: make_trace("dynamic", 1, 2, period_s=0), "period_s"),
        (lambda: ConstantTrace(math.nan, 1), "rps"),
        (lambda: StepTrace(1, 2, step_at_s=5, duration_s=4), "step_at_s"),
        (lambda: ConstantTrace(1, 0), "duration_s"),
    ],
)
def test_bad_trace_settings_fail_naming_the_value(call: object, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        call()  # type: ignore[operator]


def test_poisson_arrivals_are_deterministic_per_seed() -> None:
    trace = make_trace("dynamic", 50, 200, period_s=1.0, duration_s=5.0, seed=3)
    first = poisson_arrivals(trace, seed=7)
    assert np.array_equal(first, poisson_arrivals(trace, seed=7))
    assert not np.array_equal(first, poisson_arrivals(trace, seed=8))
    assert np.all(np.diff(first) >= 0) and first.min() >= 0 and first.max() < 5.0


def test_poisson_arrival_count_is_within_statistical_bounds() -> None:
    # Poisson(Λ) with Λ = ∫ rate dt: within 5 standard deviations (a 1-in-3.5-million miss) per part.
    trace = StepTrace(low=100.0, high=400.0, step_at_s=10.0, duration_s=20.0)
    arrivals = poisson_arrivals(trace, seed=11)
    for part, expected in ((arrivals[arrivals < 10.0], 1000.0), (arrivals[arrivals >= 10.0], 4000.0)):
        assert abs(part.size - expected) < 5 * math.sqrt(expected)


def test_poisson_gaps_are_exponential() -> None:
    arrivals = poisson_arrivals(ConstantTrace(200.0, 50.0), seed=1)
    gaps = np.diff(arrivals)
    # exponential: mean = sd = 1/rate; coefficient of variation 1 (a fixed interval would give 0)
    assert gaps.mean() == pytest.approx(1 / 200, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)


class SineTrace:
    """A trace with only the protocol's two members: no declared peak, no vectorised rates."""

    duration_s = 20.0

    def rate_at(self, t: float) -> float:
        return 100.0 + 80.0 * math.sin(2 * math.pi * t / 10.0)


def test_poisson_arrivals_accept_any_trace_of_the_protocol() -> None:
    arrivals = poisson_arrivals(SineTrace(), seed=5)
    # two whole periods: Λ = 100 * 20; the first half-period carries 100*5 + 80*10/pi
    assert abs(arrivals.size - 2000) < 5 * math.sqrt(2000)
    first_half = (arrivals < 5.0).sum()
    assert abs(first_half - (500 + 800 / math.pi)) < 5 * math.sqrt(755)


class LyingTrace(ConstantTrace):
    @property
    def peak_rps(self) -> float:
        return 1.0


def test_a_trace_above_its_declared_peak_is_refused() -> None:
    with pytest.raises(ValueError, match="peak_rps"):
        poisson_arrivals(LyingTrace(50.0, 2.0), seed=1)


@settings(max_examples=30, deadline=None)
@given(
    low=st.floats(0.0, 300.0),
    spread=st.floats(0.0, 300.0),
    duration=st.floats(0.1, 5.0),
    kind=st.sampled_from(["constant", "step", "dynamic"]),
    seed=st.integers(0, 2**31),
)
def test_arrivals_always_fall_inside_the_trace(
    low: float, spread: float, duration: float, kind: str, seed: int
) -> None:
    trace = make_trace(kind, low, low + spread, period_s=0.5, duration_s=duration, seed=seed)
    arrivals = poisson_arrivals(trace, seed)
    assert arrivals.ndim == 1
    assert np.all(arrivals >= 0) and np.all(arrivals < duration)
    assert np.all(np.diff(arrivals) >= 0)


def test_sizes_follow_the_mix_and_the_seed() -> None:
    mix = parse_mix("64:0.6,256:0.3,1024:0.1")
    assert mix == {64: 0.6, 256: 0.3, 1024: 0.1}
    sizes = draw_sizes(10_000, mix, seed=3)
    assert np.array_equal(sizes, draw_sizes(10_000, mix, seed=3))
    assert set(np.unique(sizes).tolist()) == {64, 256, 1024}
    for size, weight in mix.items():  # binomial: 5 standard deviations
        assert abs((sizes == size).sum() - 10_000 * weight) < 5 * math.sqrt(10_000 * weight * (1 - weight))


@pytest.mark.parametrize("text", ["", "64:x", "0:1", "64:-1", "64:0,128:0"])
def test_bad_size_mix_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="mix"):
        parse_mix(text)
