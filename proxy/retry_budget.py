"""Retry budget: Finagle's ``RetryBudget`` (``TokenRetryBudget`` over a ``LeakyTokenBucket``).

Retries are what turn a slow backend into an outage (every client tripling its load at once), so
they are paid for out of a budget rather than allowed per request:

* every request deposits ``SCALE`` tokens; every retry withdraws ``SCALE * 100 / budget_percent``,
  so at most ``budget_percent`` % of requests can be retried;
* deposits and withdrawals expire after ``ttl_s`` (a sliding window of ``SLICES`` slices, as
  Finagle's ``WindowedAdder``), so the budget follows the recent request rate;
* a fixed reserve of ``min_retries_per_s * ttl_s`` retries is always there, so a quiet service
  can still retry its few requests.

The arithmetic is integer tokens (Finagle scales by 1000 for the same reason): no float drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCALE = 1000  # tokens deposited per request
SLICES = 10  # window resolution: ttl_s / 10


@dataclass(frozen=True)
class RetrySettings:
    attempts: int = 2  # total tries of one request, the first included
    budget_percent: float = 20.0
    min_retries_per_s: float = 10.0
    ttl_s: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts: must be >= 1 (the first try counts), got {self.attempts}")
        if not 0.0 <= self.budget_percent <= 1000.0:  # Finagle's bounds: 0 .. 1000 %
            raise ValueError(f"budget_percent: must be within 0..1000, got {self.budget_percent}")
        if not (math.isfinite(self.min_retries_per_s) and self.min_retries_per_s >= 0):
            raise ValueError(f"min_retries_per_s: must be >= 0, got {self.min_retries_per_s}")
        if not 1.0 <= self.ttl_s <= 60.0:  # Finagle's bounds: 1 .. 60 s
            raise ValueError(f"ttl_s: must be within 1..60 seconds, got {self.ttl_s}")


class RetryBudget:
    """A token bucket whose balance is ``reserve + sum(deposits - withdrawals within ttl_s)``."""

    def __init__(self, settings: RetrySettings) -> None:
        self.settings = settings
        self.deposit_tokens = SCALE if settings.budget_percent > 0 else 0
        # Finagle: ``scaleFactor / percentCanRetry``; 0 % leaves only the reserve.
        pct = settings.budget_percent
        self.withdraw_tokens = math.ceil(SCALE * 100.0 / pct) if pct > 0 else SCALE
        self.reserve = int(settings.min_retries_per_s * settings.ttl_s * self.withdraw_tokens)
        self._slice_s = settings.ttl_s / SLICES
        self._slices = [0] * SLICES
        self._sum = 0
        self._slot = 0  # absolute index of the current slice: floor(now / slice_s)
        self.retries = 0
        self.rejected = 0

    def deposit(self, now: float) -> None:
        """One request was sent (call once per request, not per try)."""
        self._add(self.deposit_tokens, now)

    def try_withdraw(self, now: float) -> bool:
        """True, and pay for it, when one retry fits in the budget."""
        self._advance(now)
        if self.reserve + self._sum < self.withdraw_tokens:
            self.rejected += 1
            return False
        self._add(-self.withdraw_tokens, now)
        self.retries += 1
        return True

    def balance(self, now: float) -> int:
        """Tokens available now (``withdraw_tokens`` buys one retry)."""
        self._advance(now)
        return self.reserve + self._sum

    def _add(self, tokens: int, now: float) -> None:
        self._advance(now)
        self._slices[self._slot % SLICES] += tokens
        self._sum += tokens

    def _advance(self, now: float) -> None:
        slot = math.floor(now / self._slice_s)
        if slot <= self._slot:
            return  # same slice (or a clock step back: keep counting into the current one)
        for k in range(self._slot + 1, min(slot, self._slot + SLICES) + 1):
            i = k % SLICES
            self._sum -= self._slices[i]
            self._slices[i] = 0
        self._slot = slot
