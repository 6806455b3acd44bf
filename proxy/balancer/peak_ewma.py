"""``peak_ewma``: power of two choices on peak-EWMA load (Finagle ``P2CPeakEwma``; linkerd2-proxy
and tower ``p2c`` over ``PeakEwma``).

Two distinct candidates are drawn at random; the lower ``ewma_cost(now) * (in_flight + 1) /
weight`` wins (the cost model is in ``endpoint.py``). Drawing two instead of taking the global
minimum keeps many independent deciders (workers, proxies) from herding onto the one backend that
looked best a moment ago, while still never choosing the worst one (Mitzenmacher 2001). O(1).
Weights divide the load: a backend of weight 2 is expected to carry twice the in-flight work.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .base import Endpoint, RequestInfo


class PeakEwmaPolicy:
    name = "peak_ewma"

    def pick(
        self, endpoints: Sequence[Endpoint], request: RequestInfo, rng: random.Random, now: float
    ) -> Endpoint | None:
        n = len(endpoints)
        if n <= 1:
            return endpoints[0] if n else None
        # linkerd gen_pair: two distinct indices from two draws. ``int(random() * n)`` rather than
        # ``randrange``: a third of the cost, and the bias (n / 2**53) is far below any load signal.
        i = int(rng.random() * n)
        j = int(rng.random() * (n - 1))
        if j >= i:
            j += 1
        a, b = endpoints[i], endpoints[j]
        return b if load(b, now) < load(a, now) else a


def load(ep: Endpoint, now: float) -> float:
    """Finagle's PeakEwma load: expected wait = RTT estimate x outstanding work, over weight."""
    return ep.ewma_cost(now) * (ep.in_flight + 1) / ep.weight
