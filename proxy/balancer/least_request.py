"""``least_request``: power of two choices on in-flight requests (Mitzenmacher 2001; Envoy
``LeastRequestLoadBalancer`` with ``choice_count: 2``; Finagle ``P2CPick``).

Two distinct candidates are drawn at random and the one with the lower ``(in_flight + 1) / weight``
wins. The ``+ 1`` is Envoy's ``weight / (active + 1)``: without it every idle backend ties at zero
and the static weights would stop mattering exactly when the pool is quiet. A tie goes to the
first draw, which is itself uniform. O(1) per pick; the worst backend of three or more is never
chosen, because it always loses its duel.

Weights scale capacity, as in HAProxy's ``leastconn`` (connections / weight): under load each
backend carries in-flight work in proportion to its weight. When the pool is idle the heavier
backend wins every duel it is drawn into, so a light one gets less than its weight's share of a
trickle of traffic (``round_robin`` and ``random`` give exact shares).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .base import Endpoint, RequestInfo


class LeastRequestPolicy:
    name = "least_request"

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
        return b if (b.in_flight + 1) * a.weight < (a.in_flight + 1) * b.weight else a
