"""The accuracy sweep and the break-even accuracy of ``predicted``.

``Bench`` runs policies on one scenario, averaged over ``replicas`` seeds, and caches every run.
Within a seed all policies and accuracies share the workload and the noise draws ``Z`` (the
prediction error is ``exp(sigma(a) * Z)``), so the RTT-vs-accuracy curve is smooth and policy
differences are not luck.

The **threshold** is the minimum nominal accuracy at which ``predicted`` beats the best heuristic
(lowest mean RTT among ``HEURISTICS``) on a metric. From a grid: the lowest grid accuracy from
which every higher grid point beats it, then bisection between it and the grid point below
(which does not), ``refine`` times. Without a grid (the sensitivity runs): bisection on ``[0, 1]``.
It is reported with the accuracies ``predicted`` then shows: ``expected_accuracy`` and
``live_accuracy`` (what the proxy's live safeguard measures), see ``metrics``. The same search
against ``peak_ewma`` alone gives the break-even of the proxy's actual choice: its safeguard
switches between ``predicted`` and ``peak_ewma``, not Prequal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from .engine import Setup, prepare, simulate
from .metrics import Summary, summarize
from .policies import HEURISTICS
from .scenario import Scenario

GRID: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(11))  # 0.50 .. 1.00
FALLBACK = "peak_ewma"  # the proxy's predicted policy falls back to it


class Bench:
    """Runs on one scenario over ``replicas`` seeds (``seed``, ``seed + 1``, ...), averaged."""

    def __init__(
        self, scenario: Scenario, replicas: int = 1, log: Callable[[str], None] | None = None
    ) -> None:
        if replicas < 1:
            raise ValueError("replicas: must be >= 1")
        self.scenario = scenario
        self.setups: list[Setup] = [prepare(scenario.with_(seed=scenario.seed + k)) for k in range(replicas)]
        self.cache: dict[tuple[str, float], Summary] = {}
        self.log = log

    def run(self, policy: str, accuracy: float = 1.0) -> Summary:
        key = (policy, round(accuracy, 6) if policy == "predicted" else 1.0)
        if key not in self.cache:
            runs = [summarize(simulate(s, policy, accuracy)) for s in self.setups]
            self.cache[key] = average(runs)
            if self.log is not None:
                self.log(_progress(self.cache[key]))
        return self.cache[key]

    def best_of(self, policies: Sequence[str], metric: str = "mean_s") -> Summary:
        return min((self.run(name) for name in policies), key=lambda s: getattr(s, metric))


@dataclass(frozen=True, slots=True)
class Threshold:
    metric: str
    best_heuristic: str
    best_value: float
    accuracy: float | None  # None: predicted never beats the best heuristic, even at 100 %
    bound: str  # "at": found by search; "at_most": beats even at accuracy 0; "never"
    live_accuracy: float | None
    live_ape_std: float | None  # spread of the clipped errors behind live_accuracy
    expected_accuracy: float | None
    resolution: float
    evaluated: list[tuple[float, float]] = field(default_factory=list)  # (accuracy, metric value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_threshold(
    bench: Bench,
    metric: str = "mean_s",
    grid: Sequence[float] = (),
    refine: int = 3,
    steps: int = 6,
    against: Sequence[str] = HEURISTICS,
) -> Threshold:
    best = bench.best_of(against, metric)
    target = getattr(best, metric)

    def beats(a: float) -> bool:
        return bool(getattr(bench.run("predicted", a), metric) < target)

    if grid:
        lo, hi = _bracket_from_grid(sorted(grid), beats)
        iterations = refine
    else:
        lo, hi = None, (1.0 if beats(1.0) else None)
        iterations = steps
    if hi is None:
        return _threshold(bench, metric, best, None, "never", 0.0)
    if lo is None:  # beats at the lowest accuracy tried: look below, down to 0
        if beats(0.0):
            return _threshold(bench, metric, best, 0.0, "at_most", 0.0)
        lo, iterations = 0.0, steps
    for _ in range(iterations):
        mid = (lo + hi) / 2.0
        lo, hi = (lo, mid) if beats(mid) else (mid, hi)
    return _threshold(bench, metric, best, hi, "at", hi - lo)


def _bracket_from_grid(
    grid: list[float], beats: Callable[[float], bool]
) -> tuple[float | None, float | None]:
    """``(lo, hi)``: ``hi`` the lowest grid point from which all higher ones beat, ``lo`` the one below."""
    wins = [beats(a) for a in grid]
    if not wins[-1]:
        return grid[-1], None
    k = len(grid) - 1
    while k > 0 and wins[k - 1]:
        k -= 1
    return (grid[k - 1] if k > 0 else None), grid[k]


def _threshold(
    bench: Bench, metric: str, best: Summary, acc: float | None, bound: str, resolution: float
) -> Threshold:
    at = bench.run("predicted", acc) if acc is not None else None
    evaluated = sorted((a, getattr(s, metric)) for (name, a), s in bench.cache.items() if name == "predicted")
    return Threshold(
        metric=metric,
        best_heuristic=best.policy,
        best_value=getattr(best, metric),
        accuracy=acc,
        bound=bound,
        live_accuracy=at.live_accuracy if at else None,
        live_ape_std=at.live_ape_std if at else None,
        expected_accuracy=at.expected_accuracy if at else None,
        resolution=resolution,
        evaluated=evaluated,
    )


@dataclass(frozen=True, slots=True)
class SweepResult:
    scenario: Scenario
    baselines: list[Summary]  # heuristics, then oracle
    predicted: list[Summary]  # by nominal accuracy
    thresholds: dict[str, Threshold]  # "mean_s", "p99_s" vs the best heuristic; "mean_s:peak_ewma"

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.as_dict(),
            "baselines": [s.as_dict() for s in self.baselines],
            "predicted": [s.as_dict() for s in self.predicted],
            "thresholds": {m: t.as_dict() for m, t in self.thresholds.items()},
        }


def accuracy_sweep(
    bench: Bench, grid: Sequence[float] = GRID, metrics: Sequence[str] = ("mean_s", "p99_s"), refine: int = 3
) -> SweepResult:
    """Baselines, ``predicted`` on the grid, and its break-even on each metric against the best
    heuristic, plus on the mean against ``FALLBACK`` alone (what the proxy's safeguard switches to)."""
    baselines = [bench.run(name) for name in (*HEURISTICS, "oracle")]
    predicted = [bench.run("predicted", a) for a in grid]
    thresholds = {m: find_threshold(bench, m, grid=grid, refine=refine) for m in metrics}
    thresholds[f"mean_s:{FALLBACK}"] = find_threshold(
        bench, "mean_s", grid=grid, refine=refine, against=[FALLBACK]
    )
    return SweepResult(bench.scenario, baselines, predicted, thresholds)


def average(runs: Sequence[Summary]) -> Summary:
    """Field-wise mean of replicas (percentiles too: the mean of per-seed percentiles)."""
    if len(runs) == 1:
        return runs[0]
    values: dict[str, Any] = {}
    for f in fields(Summary):
        column = [getattr(r, f.name) for r in runs]
        if isinstance(column[0], str) or column[0] is None:
            values[f.name] = column[0]
        elif f.name == "requests":
            values[f.name] = int(sum(column))
        else:
            values[f.name] = float(np.mean(column))
    return Summary(**values)


def _progress(s: Summary) -> str:
    acc = f"@{s.accuracy:.3f}" if s.accuracy is not None else ""
    return f"  {s.policy}{acc}: mean {s.mean_s * 1e3:.2f} ms, p99 {s.p99_s * 1e3:.2f} ms ({s.wall_s:.1f} s)"
