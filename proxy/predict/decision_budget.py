"""A circuit breaker on routing-decision time.

The seed papers' rule is that prediction must stay a small fraction of the RTT it predicts (within
10 %, better under 1 %). A decision's cost is only known after it was made, so the guard is
reactive: every model decision reports its wall time; when more than ``max_slow_share`` of the last
``window`` decisions exceeded the budget, the breaker opens and the policy routes by its fallback
for ``cooldown_s``, then closes again and measures afresh (half-open, as in Hystrix/Envoy outlier
ejection). The budget itself is ``budget_frac`` of the median observed RTT, tracked as a
streaming median estimate (Frugal-2U-like step updates) so the hot path does no sorting; the
proxy's batched feedback replaces it with each large batch's own median.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

MEDIAN_BATCH = 64  # RTTs a batch needs for its own median to replace the streaming estimate


class DecisionBudget:
    def __init__(
        self,
        *,
        budget_frac: float = 0.01,
        min_budget_s: float = 50e-6,
        window: int = 200,
        max_slow_share: float = 0.1,
        cooldown_s: float = 5.0,
        initial_rtt_s: float = 0.01,
    ) -> None:
        if not 0.0 < budget_frac <= 0.1:
            raise ValueError("budget_frac must be in (0, 0.1]: prediction above 10% of the RTT never pays")
        self.budget_frac = budget_frac
        self.min_budget_s = min_budget_s
        self.max_slow_share = max_slow_share
        self.cooldown_s = cooldown_s
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        # "more than max_slow_share of the last window decisions were slow" holds exactly when the
        # decision ``need`` slow ones ago is among the last ``window``: keep only the indices of
        # the last ``need`` slow decisions, so a decision within budget costs one increment
        self._need = math.floor(max_slow_share * window) + 1
        self._slow_at: deque[int] = deque(maxlen=self._need)
        self._count = 0  # decisions since the breaker last closed its books
        self.open_until = 0.0  # open while now < this; the decision path compares it inline
        self.median_rtt_s = initial_rtt_s
        self._step = initial_rtt_s / 10.0
        self.budget_s = self._budget()  # decision time allowed (seconds), kept up to date by observe_rtt

    def _budget(self) -> float:
        return max(self.budget_frac * self.median_rtt_s, self.min_budget_s)

    def observe_rtt(self, rtt_s: float) -> None:
        """Streaming median (a multiplicative-step variant of Frugal streaming, Ma et al. 2013)."""
        if rtt_s <= 0.0:
            return
        if rtt_s > self.median_rtt_s:
            self.median_rtt_s += self._step
        elif rtt_s < self.median_rtt_s:
            self.median_rtt_s = max(self.median_rtt_s - self._step, 1e-6)
        # The step follows the estimate's scale so that it converges at any RTT magnitude.
        self._step = max(self.median_rtt_s / 50.0, 1e-7)
        self.budget_s = self._budget()  # kept, not computed per decision

    def observe_rtts(self, rtts: list[float]) -> None:
        """``observe_rtt`` for each of ``rtts`` in order, or, for a batch of at least
        ``MEDIAN_BATCH`` (the proxy's feedback at high request rates), the batch's own median: a
        better estimate than as many Frugal steps, and one numpy call instead of a Python step per
        RTT (~90 us a batch of 256 inside a loaded worker)."""
        if len(rtts) >= MEDIAN_BATCH:
            values = np.asarray(rtts, dtype=np.float64)
            values = values[values > 0.0]
            if len(values) >= MEDIAN_BATCH:
                self.median_rtt_s = max(float(np.median(values)), 1e-6)
                self._step = max(self.median_rtt_s / 50.0, 1e-7)
                self.budget_s = self._budget()
                return
        median, step = self.median_rtt_s, self._step
        for rtt in rtts:
            if rtt <= 0.0:
                continue
            if rtt > median:
                median += step
            elif rtt < median:
                median = max(median - step, 1e-6)
            step = max(median / 50.0, 1e-7)
        self.median_rtt_s, self._step = median, step
        self.budget_s = self._budget()

    def record(self, decision_s: float, now: float) -> bool:
        """Record one decision's duration; True when it exceeded the budget.

        ``_fastpick.decide`` (the ``predicted`` policy's table path in C) does the common case
        inline, a decision within budget that does not fill the window (``_count += 1``), and
        calls this for the rest: a change to the rule here changes it there too."""
        count = self._count = self._count + 1
        slow = decision_s > self.budget_s
        slow_at = self._slow_at
        if slow:
            slow_at.append(count)
        elif count != self.window:  # only a slow one, or the window filling up, can open it
            return False
        # judged over a full window only: the first decisions of a process (cold caches, a model
        # just loaded) are slow once and must not open the breaker on a handful of samples
        if count >= self.window and len(slow_at) == self._need and count - slow_at[0] < self.window:
            self.open_until = now + self.cooldown_s
            slow_at.clear()
            self._count = 0
        return slow

    def is_open(self, now: float) -> bool:
        return now < self.open_until
