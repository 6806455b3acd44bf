"""Prediction-driven hedging: a second copy of a slow idempotent request, sent to the runner-up.

Dean & Barroso ("The Tail at Scale", CACM 2013) cut tail latency by sending a second copy of a
request once the first has been outstanding longer than, say, the 95th-percentile latency of its
class, and taking whichever answer comes first. With a model in the loop the deadline can be per
request: the ``predicted`` policy has just estimated how long *this* request should take on the
backend it chose (``Decision.predicted_s``) and on the runner-up (``Decision.runner_up_s``). When
the chosen backend has not sent its response head after ``after x predicted_s`` (at least
``min_delay_s``), the request is sent again to the runner-up; the first response head wins, and the
other copy's connection is closed (its backend may still finish the work: an HTTP/1.1 backend
learns of the cancellation only when it writes to the closed connection).

Only requests that can safely run twice are hedged: idempotent methods with no streamed body, a
decision by the model (never a fallback's, whose choice has no prediction behind it) and a
runner-up. Copies are paid for from a budget — Finagle's token bucket, as for retries
(``retry_budget.RetryBudget``): at most ``budget_percent`` % of requests over the last ``ttl_s``,
plus a small reserve — so a slow backend pool cannot double its own load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from .retry_budget import RetryBudget, RetrySettings


@dataclass(frozen=True)
class HedgeSettings:
    after: float = 0.0  # multiple of the chosen backend's predicted RTT; 0 turns hedging off
    min_delay_s: float = 0.002  # never sooner than this (a prediction of 0.3 ms is not a deadline)
    budget_percent: float = 5.0  # copies per 100 requests, over ttl_s
    min_per_s: float = 1.0  # reserve: copies per second a quiet service may always send
    ttl_s: float = 10.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.after) and (self.after == 0.0 or self.after >= 1.0)):
            raise ValueError(f"after: 0 (off) or a multiple >= 1 of the predicted RTT, got {self.after}")
        if not (math.isfinite(self.min_delay_s) and self.min_delay_s >= 0.0):
            raise ValueError(f"min_delay_s: must be >= 0, got {self.min_delay_s}")
        if not 0.0 < self.budget_percent <= 100.0:
            raise ValueError(f"budget_percent: must be in (0, 100], got {self.budget_percent}")
        # the rest is checked by RetrySettings (same bounds as the retry budget)
        self.budget_settings()

    @property
    def enabled(self) -> bool:
        return self.after > 0.0

    def budget_settings(self) -> RetrySettings:
        return RetrySettings(
            attempts=2, budget_percent=self.budget_percent, min_retries_per_s=self.min_per_s, ttl_s=self.ttl_s
        )

    def budget(self) -> RetryBudget:
        return RetryBudget(self.budget_settings())

    def delay_s(self, predicted_s: float) -> float:
        """How long the first copy gets before the second is sent."""
        return max(self.min_delay_s, self.after * predicted_s)


class HedgeMetrics:
    """``presage_hedges_total{result}``: sent (a copy went out), won (the copy answered first),
    denied (the budget refused a copy)."""

    RESULTS = ("sent", "won", "denied")

    def __init__(self, registry: CollectorRegistry) -> None:
        family = Counter(
            "presage_hedges", "Hedged requests: copies sent to the runner-up, won, or denied by the budget.",
            ["result"], registry=registry,
        )  # fmt: skip
        self.sent = family.labels("sent")
        self.won = family.labels("won")
        self.denied = family.labels("denied")
