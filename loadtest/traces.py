"""Offered-load traces and Poisson arrival schedules for the open-loop load generator.

A trace is the target request rate over time, ``rate_at(t)`` in requests/s for ``t`` seconds after
the start. Three shapes, all piecewise constant:

* ``ConstantTrace`` — one rate for the whole run.
* ``StepTrace`` — ``low`` until ``step_at_s``, then ``high``: how a balancer reacts to a sudden jump.
* ``DynamicTrace`` — a new level drawn uniformly from ``[low, high]`` every ``period_s`` seconds. This
  is the dynamic load of the ETH Zurich memcached/PARSEC co-location study (mcperf's
  ``--qps_interval 10 --qps_min 5000 --qps_max 180000``: every 10 s a fresh random QPS between
  5K and 180K), with the levels scaled to what this machine's testbed can serve.

``poisson_arrivals`` turns a trace into send offsets: a non-homogeneous Poisson process drawn by
thinning (Lewis & Shedler, "Simulation of nonhomogeneous Poisson processes by thinning", 1979):
candidates from a homogeneous process at the peak rate ``λ*``, each kept with probability
``λ(t)/λ*``. Poisson arrivals are what many independent clients produce, and, unlike a fixed
interval, they bunch, which is what makes queues form at a backend.

``make_trace`` builds a trace by name from the same five numbers for every shape, so that one CLI
(``loadtest.loadgen``), the locustfile and the bench harness accept the same flags. With
``low_rps``/``high_rps``, all three shapes offer the same mean load ``(low+high)/2`` (the step
comes at half time; the dynamic levels are uniform on ``[low, high]``), so runs with different
shapes are comparable.

``draw_sizes`` assigns each request a size (e.g. an image side) from a weighted mix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

TRACE_KINDS = ("constant", "step", "dynamic")
# Default request-size mix (image side in pixels -> share): mostly light requests with a heavy
# tail, so that a balancer that ignores size puts a heavy request behind another one now and then.
DEFAULT_SIZE_MIX: dict[int, float] = {64: 0.45, 128: 0.30, 256: 0.18, 512: 0.07}


@runtime_checkable
class Trace(Protocol):
    """Target request rate over time; ``rate_at`` is defined on ``[0, duration_s)``."""

    @property
    def duration_s(self) -> float: ...

    def rate_at(self, t: float) -> float: ...


def _check_rate(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite rate >= 0 req/s, got {value!r}")


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class ConstantTrace:
    rps: float
    duration_s: float

    def __post_init__(self) -> None:
        _check_rate("rps", self.rps)
        _check_positive("duration_s", self.duration_s)

    @property
    def peak_rps(self) -> float:
        return float(self.rps)

    def rate_at(self, t: float) -> float:
        return float(self.rps)

    def rates_at(self, t: np.ndarray) -> np.ndarray:
        return np.full(np.shape(t), float(self.rps))


@dataclass(frozen=True)
class StepTrace:
    low: float
    high: float
    step_at_s: float
    duration_s: float

    def __post_init__(self) -> None:
        _check_rate("low", self.low)
        _check_rate("high", self.high)
        _check_positive("duration_s", self.duration_s)
        if not (math.isfinite(self.step_at_s) and 0 <= self.step_at_s <= self.duration_s):
            raise ValueError(
                f"step_at_s must lie in [0, duration_s={self.duration_s}], got {self.step_at_s!r}"
            )

    @property
    def peak_rps(self) -> float:
        return float(max(self.low, self.high))

    def rate_at(self, t: float) -> float:
        return float(self.low if t < self.step_at_s else self.high)

    def rates_at(self, t: np.ndarray) -> np.ndarray:
        return np.where(np.asarray(t) < self.step_at_s, float(self.low), float(self.high))


@dataclass(frozen=True)
class DynamicTrace:
    """A fresh rate, uniform on ``[low, high]``, every ``period_s`` seconds (seeded)."""

    low: float
    high: float
    period_s: float = 10.0
    duration_s: float = 60.0
    seed: int = 0
    levels: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_rate("low", self.low)
        _check_rate("high", self.high)
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        _check_positive("period_s", self.period_s)
        _check_positive("duration_s", self.duration_s)
        periods = math.ceil(self.duration_s / self.period_s)
        rng = np.random.default_rng([int(self.seed), 0x7ACE])
        levels = rng.uniform(self.low, self.high, size=periods)
        levels.setflags(write=False)
        object.__setattr__(self, "levels", levels)

    @property
    def peak_rps(self) -> float:
        return float(self.levels.max())

    def _index(self, t: np.ndarray) -> np.ndarray:
        return np.clip((np.asarray(t) // self.period_s).astype(np.int64), 0, len(self.levels) - 1)

    def rate_at(self, t: float) -> float:
        k = min(max(int(t // self.period_s), 0), len(self.levels) - 1)
        return float(self.levels[k])

    def rates_at(self, t: np.ndarray) -> np.ndarray:
        return self.levels[self._index(t)]


def make_trace(
    kind: str,
    low_rps: float,
    high_rps: float,
    period_s: float = 10.0,
    duration_s: float = 60.0,
    seed: int = 0,
) -> ConstantTrace | StepTrace | DynamicTrace:
    """Build a trace by name: ``constant`` holds ``(low+high)/2``, ``step`` goes from ``low`` to
    ``high`` at half time, ``dynamic`` redraws its level in ``[low, high]`` every ``period_s``."""
    _check_rate("low_rps", low_rps)
    _check_rate("high_rps", high_rps)
    if high_rps < low_rps:
        raise ValueError(f"high_rps ({high_rps}) must be >= low_rps ({low_rps})")
    if kind == "constant":
        return ConstantTrace((low_rps + high_rps) / 2.0, duration_s)
    if kind == "step":
        _check_positive("duration_s", duration_s)
        return StepTrace(low_rps, high_rps, duration_s / 2.0, duration_s)
    if kind == "dynamic":
        return DynamicTrace(low_rps, high_rps, period_s, duration_s, seed)
    raise ValueError(f"unknown trace kind {kind!r}; expected one of {', '.join(TRACE_KINDS)}")


def _rates(trace: Trace, t: np.ndarray) -> np.ndarray:
    vectorised = getattr(trace, "rates_at", None)
    if vectorised is not None:
        return np.asarray(vectorised(t), dtype=float)
    return np.fromiter((trace.rate_at(x) for x in t.tolist()), dtype=float, count=t.shape[0])


def _peak(trace: Trace) -> float:
    peak = getattr(trace, "peak_rps", None)
    if peak is not None:
        return float(peak)
    # A trace without a declared peak: bound it on a 1 ms grid; thinning checks the bound below.
    grid = np.arange(0.0, float(trace.duration_s), 1e-3)
    return float(_rates(trace, grid).max()) if grid.size else 0.0


def poisson_arrivals(trace: Trace, seed: int) -> np.ndarray:
    """Sorted send offsets (s) of a non-homogeneous Poisson process with intensity ``trace.rate_at``
    on ``[0, duration_s)``, by thinning; the same ``seed`` always gives the same offsets."""
    duration = float(trace.duration_s)
    _check_positive("trace.duration_s", duration)
    peak = _peak(trace)
    _check_rate("trace peak rate", peak)
    rng = np.random.default_rng([int(seed), 0xA881])
    # Candidates at rate λ*: their count is Poisson(λ*·T), and given the count, the times are
    # uniform order statistics, so both can be drawn at once instead of summing exponentials.
    n = int(rng.poisson(peak * duration))
    candidates = np.sort(rng.uniform(0.0, duration, size=n))
    rates = _rates(trace, candidates)
    if rates.size and (not np.all(np.isfinite(rates)) or rates.min() < 0 or rates.max() > peak * (1 + 1e-9)):
        raise ValueError(f"trace rates must be finite, >= 0 and <= its peak_rps {peak}")
    keep = rng.uniform(0.0, 1.0, size=n) * peak < rates
    return candidates[keep]


def parse_mix(text: str) -> dict[int, float]:
    """``"64:0.5,256:0.3,512:0.2"`` -> ``{64: 0.5, 256: 0.3, 512: 0.2}`` (weights need not sum to 1)."""
    mix: dict[int, float] = {}
    for part in text.split(","):
        size, sep, weight = part.strip().partition(":")
        try:
            mix[int(size)] = float(weight) if sep else 1.0
        except ValueError:
            raise ValueError(f"size mix entry {part.strip()!r}: want SIZE:WEIGHT, e.g. 256:0.3") from None
    _check_mix(mix)
    return mix


def _check_mix(mix: Mapping[int, float]) -> None:
    if not mix:
        raise ValueError("size mix is empty")
    for size, weight in mix.items():
        if size <= 0 or not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"size mix entry {size}:{weight}: size must be > 0 and weight finite >= 0")
    if sum(mix.values()) <= 0:
        raise ValueError("size mix weights sum to 0")


def draw_sizes(n: int, mix: Mapping[int, float] = DEFAULT_SIZE_MIX, seed: int = 0) -> np.ndarray:
    """``n`` request sizes drawn i.i.d. from ``mix`` (size -> weight), seeded."""
    _check_mix(mix)
    sizes = np.array(list(mix), dtype=np.int64)
    weights = np.array(list(mix.values()), dtype=float)
    rng = np.random.default_rng([int(seed), 0x512E])
    return rng.choice(sizes, size=int(n), p=weights / weights.sum())
