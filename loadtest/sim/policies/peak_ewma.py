"""``peak_ewma``: power of two choices on ``peak-EWMA RTT * (in-flight + 1)``, per proxy.

As Finagle's ``PeakEwma`` and tower's ``peak_ewma.rs``: an observed RTT above the estimate
replaces it at once (peak-sensitive); otherwise it is averaged in with weight ``1 - w``,
``w = exp(-dt / tau)`` for the time ``dt`` since the last update (an unevenly spaced series,
Eckner). Reading the estimate first decays it towards 0 (an update with RTT 0), so a backend that
was slow a while ago is tried again. The estimate starts at the mean service time at capacity 1
(tower's ``default_rtt``). Each proxy keeps its own estimates and in-flight counts.
"""

from __future__ import annotations

import math

from .base import SimPolicy, distinct_pairs


class PeakEwma(SimPolicy):
    name = "peak_ewma"

    def setup(self) -> None:
        n, k = self.state.n, self.state.proxies
        default_rtt = self.scenario.service_mean_s * self.scenario.mean_factor
        self.cost = [[default_rtt] * n for _ in range(k)]
        self.stamp = [[0.0] * n for _ in range(k)]
        self.tau = self.scenario.ewma_tau_s
        self.observe = self._observe

    def prepare(self, cls: list[int]) -> None:
        self.a, self.b = distinct_pairs(self.rng, self.state.n, len(cls))

    def pick(self, j: int, t: float, p: int) -> int:
        a, b = self.a[j], self.b[j]
        local = self.state.local[p]
        load_a = self._decayed(p, a, t) * (local[a] + 1)
        load_b = self._decayed(p, b, t) * (local[b] + 1)
        return a if load_a <= load_b else b

    def _decayed(self, p: int, b: int, now: float) -> float:
        stamps, costs = self.stamp[p], self.cost[p]
        cost = costs[b] * math.exp(-(now - stamps[b]) / self.tau)
        costs[b], stamps[b] = cost, now
        return cost

    def _observe(self, b: int, p: int, rtt: float, now: float) -> None:
        stamps, costs = self.stamp[p], self.cost[p]
        cost = costs[b]
        if rtt > cost:
            costs[b] = rtt
        else:
            w = math.exp(-(now - stamps[b]) / self.tau)
            costs[b] = cost * w + rtt * (1.0 - w)
        stamps[b] = now
