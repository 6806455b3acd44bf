"""The arrival sequence and request sizes of one seed: what every evaluated policy is given alike.

Arrivals are a non-homogeneous Poisson process following the scenario's trace
(``loadtest.traces``), sizes are drawn i.i.d. from the scenario's mix. The collection run uses
one seed and the evaluation another, so the model is never assessed on the very requests it was
trained on; every policy of the evaluation gets the identical arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loadtest.testbed.scenario import Scenario
from loadtest.traces import ConstantTrace, DynamicTrace, StepTrace, draw_sizes, make_trace, poisson_arrivals


@dataclass(frozen=True)
class Workload:
    seed: int
    trace: ConstantTrace | StepTrace | DynamicTrace
    arrivals: np.ndarray  # send offsets, s, sorted
    sizes: np.ndarray  # image side per request
    duration_s: float

    @property
    def count(self) -> int:
        return int(self.arrivals.shape[0])

    def offered_rate(self, bin_s: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(bin starts, arrivals per second in each bin), for the timeline plot."""
        edges = np.arange(0.0, self.duration_s + bin_s, bin_s)
        counts, _ = np.histogram(self.arrivals, bins=edges)
        return edges[:-1], counts / bin_s


def make_workload(scenario: Scenario, seed: int, duration_s: float | None = None) -> Workload:
    """The scenario's trace over ``duration_s`` (default the scenario's), arrivals and sizes of ``seed``."""
    t = scenario.trace
    duration = float(duration_s or scenario.duration_s)
    trace = make_trace(t.kind, t.low_rps, t.high_rps, t.period_s, duration, seed)
    arrivals = poisson_arrivals(trace, seed)
    sizes = draw_sizes(arrivals.shape[0], scenario.sizes.shares(), seed)
    return Workload(seed, trace, arrivals, sizes, duration)
