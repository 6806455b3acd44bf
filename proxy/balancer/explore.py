"""``--explore EPS``: route a share of requests uniformly at random, and say which ones.

Training data recorded under a policy is biased by that policy: a backend it never chooses in some
state is never observed in that state, and a model trained on such data cannot learn what it
would cost (the logging-policy bias of off-policy learning). Uniform exploration on a known share
of requests gives every backend observations in every state; the samples carry the flag so that
the trainer and the operator can tell the two kinds apart (Morpheus collects its training data
the same way, spreading load across all backends).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .base import Endpoint, Policy, RequestInfo


class ExplorePolicy:
    """Wraps ``inner``; after each ``pick``, ``explored`` says whether that pick was random."""

    def __init__(self, inner: Policy, eps: float) -> None:
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"explore: must be in [0.0, 1.0], got {eps!r}")
        self.inner = inner
        self.eps = eps
        self.name = inner.name
        self.explored = False

    def pick(
        self, endpoints: Sequence[Endpoint], request: RequestInfo, rng: random.Random, now: float
    ) -> Endpoint | None:
        if endpoints and rng.random() < self.eps:
            self.explored = True
            return endpoints[int(rng.random() * len(endpoints))]
        self.explored = False
        return self.inner.pick(endpoints, request, rng, now)
