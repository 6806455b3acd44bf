"""How the break-even accuracy moves with load, heterogeneity, staleness and the number of proxies.

Each axis changes one knob of the base scenario and finds two thresholds by bisection (``sweep``):
against the best heuristic (the question of the sweep) and against ``peak_ewma`` alone (``FALLBACK``,
the policy the proxy's safeguard switches to, so the break-even that matters to the safeguard).
Two axes switch the predictor to the ``stale`` view, because a predictor of the *true* state is by
construction blind to report age and to other proxies' load: ``staleness`` (agent interval, with
the delay at half of it: mean report age ``delay + interval / 2``) and ``proxies_stale``.
``choices`` varies how many candidates ``predicted`` scores per decision (0: all of them): the
power of d choices matters as much as the accuracy of what is compared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .scenario import Scenario
from .sweep import FALLBACK, Bench, find_threshold

Apply = Callable[[Scenario, float], Scenario]

AXES: dict[str, tuple[Apply, tuple[float, ...]]] = {
    "load": (lambda s, v: s.with_(load=v), (0.5, 0.6, 0.7, 0.8, 0.9)),
    "heterogeneity": (lambda s, v: s.with_(heterogeneity=v), (1.0, 2.0, 4.0, 8.0)),
    "staleness": (
        lambda s, v: s.with_(view="stale", interval_s=v, delay_s=v / 2.0),
        (0.05, 0.25, 1.0, 2.0, 4.0),
    ),
    "proxies": (lambda s, v: s.with_(proxies=int(v)), (1.0, 2.0, 4.0, 8.0)),
    "proxies_stale": (lambda s, v: s.with_(proxies=int(v), view="stale"), (1.0, 2.0, 4.0, 8.0)),
    "choices": (lambda s, v: s.with_(choices=int(v)), (2.0, 3.0, 4.0, 0.0)),  # 0: every backend
}


@dataclass(frozen=True, slots=True)
class Point:
    axis: str
    value: float
    threshold: float | None
    bound: str
    resolution: float
    live_accuracy: float | None
    best_heuristic: str
    best_mean_s: float
    fallback_threshold: float | None  # the same against FALLBACK alone
    fallback_bound: str
    fallback_live_accuracy: float | None
    fallback_mean_s: float
    predicted_100_mean_s: float
    oracle_mean_s: float

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}


def sensitivity(
    base: Scenario,
    axes: Sequence[str] = tuple(AXES),
    replicas: int = 1,
    steps: int = 6,
    log: Callable[[str], None] | None = None,
) -> list[Point]:
    points: list[Point] = []
    for axis in axes:
        if axis not in AXES:
            raise ValueError(f"axis: unknown {axis!r} (known: {', '.join(AXES)})")
        apply, values = AXES[axis]
        for value in values:
            if log is not None:
                log(f"{axis} = {value:g}")
            points.append(_point(axis, value, apply(base, value), replicas, steps, log))
    return points


def _point(
    axis: str, value: float, scenario: Scenario, replicas: int, steps: int, log: Callable[[str], None] | None
) -> Point:
    bench = Bench(scenario, replicas, log)
    th = find_threshold(bench, "mean_s", steps=steps)
    fb = find_threshold(bench, "mean_s", steps=steps, against=[FALLBACK])
    return Point(
        axis=axis,
        value=value,
        threshold=th.accuracy,
        bound=th.bound,
        resolution=th.resolution,
        live_accuracy=th.live_accuracy,
        best_heuristic=th.best_heuristic,
        best_mean_s=th.best_value,
        fallback_threshold=fb.accuracy,
        fallback_bound=fb.bound,
        fallback_live_accuracy=fb.live_accuracy,
        fallback_mean_s=fb.best_value,
        predicted_100_mean_s=bench.run("predicted", 1.0).mean_s,
        oracle_mean_s=bench.run("oracle").mean_s,
    )
