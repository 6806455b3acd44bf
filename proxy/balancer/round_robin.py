"""``round_robin``: NGINX's smooth weighted round robin (``ngx_http_upstream_get_peer``).

Equal weights simply rotate an index, O(1). Different weights use NGINX's smooth algorithm: every
pick adds each candidate's weight to its ``current`` counter, takes the largest counter and
subtracts the total weight from it. Over one cycle of ``sum(weights)`` picks each backend gets
exactly its weight (integer weights), spread out rather than in bursts (5,1,1 gives
``a a b a c a a``, not ``a a a a a b c``). That path is O(n) per pick, as in NGINX.

The counters are kept per backend id, so they survive a new candidate tuple (health changes,
reloads). Whether the weights are all equal is computed once per candidate tuple: the pool hands
over the same immutable tuple until health, ejection or configuration changes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .base import Endpoint, RequestInfo


class RoundRobinPolicy:
    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0
        self._current: dict[str, float] = {}
        self._seen: Sequence[Endpoint] = ()
        self._uniform = True

    def pick(
        self, endpoints: Sequence[Endpoint], request: RequestInfo, rng: random.Random, now: float
    ) -> Endpoint | None:
        n = len(endpoints)
        if n <= 1:
            return endpoints[0] if n else None
        if endpoints is not self._seen:  # the pool hands over one tuple until its state changes
            self._seen, self._uniform = endpoints, len({ep.weight for ep in endpoints}) == 1
        if self._uniform:
            self._next = (self._next + 1) % n
            return endpoints[self._next - 1]
        return self._smooth(endpoints)

    def _smooth(self, endpoints: Sequence[Endpoint]) -> Endpoint:
        current = self._current
        total = 0.0
        best = endpoints[0]
        best_value = -float("inf")
        for ep in endpoints:
            value = current.get(ep.id, 0.0) + ep.weight
            current[ep.id] = value
            total += ep.weight
            if value > best_value:
                best, best_value = ep, value
        current[best.id] = best_value - total
        return best
