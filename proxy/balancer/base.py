"""The balancer surface every policy shares.

A policy only compares (tower's ``Load`` trait; Finagle's ``P2CPick``): it is handed the eligible
endpoints of an immutable snapshot, the request's features, a seeded ``random.Random`` and the
current time, and returns one endpoint or ``None``. Health, ejection and panic routing decide
*which* endpoints are eligible before the policy is asked; the policy never filters.

``Endpoint`` objects keep identity across snapshots (a config reload keeps the endpoint of an
unchanged backend), so their live load signals (in-flight, peak-EWMA RTT) survive swaps. The
signals are per worker process: workers do not share memory, as in Envoy.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What the balancer may know about a request before it is sent."""

    method: str = "GET"
    body_bytes: int = 0  # Content-Length when known, else 0
    req_class: float = 0.0  # from --class-from (samples.class_value)
    idempotent: bool = True


class Policy(Protocol):
    """``pick`` chooses among ``endpoints`` (never empty when called with >= 1 candidate).

    ``on_dispatch``/``on_complete`` let a policy keep its own signals; the shared in-flight and
    EWMA counters on the endpoint are maintained by the data plane, not by policies.
    """

    name: str

    def pick(
        self,
        endpoints: Sequence[Endpoint],
        request: RequestInfo,
        rng: random.Random,
        now: float,
    ) -> Endpoint | None: ...


class Endpoint(Protocol):
    """A backend as the balancer sees it. Implemented in ``proxy.balancer.endpoint``."""

    id: str
    url: str
    weight: float
    in_flight: int

    def ewma_cost(self, now: float) -> float:
        """Peak-EWMA RTT estimate in seconds at ``now`` (decayed), before the in-flight factor."""
        ...
