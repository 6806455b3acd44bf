"""``least_request``: power of two choices on the proxy's own in-flight counts.

Two distinct backends at random, the one with fewer requests in flight *from this proxy* wins
(Envoy's ``LEAST_REQUEST`` with ``choice_count: 2``; Mitzenmacher 2001). With K proxies each
sees only its share of the load.
"""

from __future__ import annotations

from .base import SimPolicy, distinct_pairs


class LeastRequest(SimPolicy):
    name = "least_request"

    def prepare(self, cls: list[int]) -> None:
        self.a, self.b = distinct_pairs(self.rng, self.state.n, len(cls))

    def pick(self, j: int, t: float, p: int) -> int:
        a, b = self.a[j], self.b[j]
        local = self.state.local[p]
        return a if local[a] <= local[b] else b
