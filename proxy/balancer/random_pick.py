"""``random``: weighted random choice (Envoy ``RANDOM``; HAProxy ``balance random(1)``).

Equal weights draw one index, O(1). Different weights draw from the cumulative weights with a
bisection, O(log n); the cumulative table is cached per candidate sequence (the pool hands over
the same immutable tuple until health or ejection changes), so it is not rebuilt per request.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

from .base import Endpoint, RequestInfo


class RandomPolicy:
    name = "random"

    def __init__(self) -> None:
        self._seen: Sequence[Endpoint] = ()
        self._cum: list[float] | None = None  # None: all weights equal

    def pick(
        self, endpoints: Sequence[Endpoint], request: RequestInfo, rng: random.Random, now: float
    ) -> Endpoint | None:
        n = len(endpoints)
        if n <= 1:
            return endpoints[0] if n else None
        if endpoints is not self._seen:
            self._seen, self._cum = endpoints, cumulative_weights(endpoints)
        cum = self._cum
        if cum is None:
            return endpoints[int(rng.random() * n)]  # cheaper than randrange; bias ~ n / 2**53
        return endpoints[min(bisect_right(cum, rng.random() * cum[-1]), n - 1)]


def cumulative_weights(endpoints: Sequence[Endpoint]) -> list[float] | None:
    first = endpoints[0].weight
    if all(ep.weight == first for ep in endpoints):
        return None
    return list(accumulate(ep.weight for ep in endpoints))
