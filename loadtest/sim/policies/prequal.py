"""``prequal``: probe a few backends, then the hot-cold lexicographic rule (HCL).

Prequal (Wydrowski, Kleinberg, Rumble et al.: "Load is not what you should balance: Introducing
Prequal", NSDI 2024) routes on two signals a probe returns: the server's requests in flight (RIF)
and its latency estimate. A probed server is *hot* when its RIF is above the ``Q_RIF`` quantile of
the RIF distribution the client has recently seen, else *cold*; the client picks the cold server
with the lowest latency, or, when every probed server is hot, the one with the lowest RIF.

Here a decision probes ``probes`` backends drawn with replacement (a repeat only wastes a probe)
and sees their true RIF at that instant (probes go to the backend, so they see every proxy's
load); the RIF distribution is the last 16 values this proxy probed; the latency estimate is the
backend's EWMA (weight 0.1 per completion) of its recent sojourn times. Prequal's asynchronous,
reused probe pool is collapsed into a synchronous probe: the simulator charges nothing for probes.
"""

from __future__ import annotations

from .base import SimPolicy

POOL = 16  # RIF values remembered per proxy for the hot/cold quantile
LATENCY_ALPHA = 0.1


class Prequal(SimPolicy):
    name = "prequal"

    def setup(self) -> None:
        n, k = self.state.n, self.state.proxies
        self.latency = [self.scenario.service_mean_s * self.scenario.mean_factor] * n
        self.pool = [[0] * POOL for _ in range(k)]
        self.pool_pos = [0] * k
        self.q_index = min(POOL - 1, int(self.scenario.rif_quantile * (POOL - 1)))
        self.observe = self._observe

    def prepare(self, cls: list[int]) -> None:
        d = self.scenario.probes
        self.probed: list[list[int]] = self.rng.integers(0, self.state.n, size=(len(cls), d)).tolist()

    def pick(self, j: int, t: float, p: int) -> int:
        probed = self.probed[j]
        nsys, latency = self.state.nsys, self.latency
        rifs = [nsys[b] for b in probed]
        threshold = self._remember(p, rifs)
        best, best_latency = -1, float("inf")
        for b, rif in zip(probed, rifs, strict=True):
            if rif <= threshold and latency[b] < best_latency:
                best, best_latency = b, latency[b]
        if best >= 0:
            return best
        return probed[rifs.index(min(rifs))]

    def _remember(self, p: int, rifs: list[int]) -> int:
        """Add the probed RIFs to this proxy's pool; return the pool's ``Q_RIF`` quantile."""
        pool, pos = self.pool[p], self.pool_pos[p]
        for rif in rifs:
            pool[pos] = rif
            pos = pos + 1 if pos + 1 < POOL else 0
        self.pool_pos[p] = pos
        return sorted(pool)[self.q_index]

    def _observe(self, b: int, p: int, rtt: float, now: float) -> None:
        self.latency[b] += LATENCY_ALPHA * (rtt - self.latency[b])
