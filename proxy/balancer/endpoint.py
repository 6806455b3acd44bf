"""A backend endpoint and its peak-EWMA RTT estimate (Finagle ``PeakEwma``, tower ``peak_ewma.rs``).

Peak-EWMA (Finagle, linkerd2-proxy via tower). The cost is a moving average of response times
that jumps to any *peak* at once and only decays slowly afterwards:

* on an observation ``rtt`` at ``now``, with ``w = exp(-elapsed / decay_s)`` and ``elapsed`` the
  time since the previous observation::

      cost = rtt                          if rtt > estimate(now)   (the peak, taken at once)
      cost = cost * w + rtt * (1 - w)     otherwise                (time-weighted EWMA)

* between observations the estimate decays toward zero, ``estimate(now) = cost * w``, as Finagle's
  ``get()`` (``observe(0.0)``) and tower's ``RttEstimate::decay`` do: a backend that stopped getting
  traffic because it once looked slow is tried again after a few decay periods instead of
  starving forever. Reading is side-effect free here (tower mutates on read), so the two readings
  of one instant agree and an observation right after a read still counts fully.

``load(now) = estimate(now) * (in_flight + 1) / weight`` (Finagle ``PeakEwma`` load: cost times
outstanding work; the static weight divides, as Envoy's ``weight / (active + 1)``).

Failures. A backend that answers 5xx in 1 ms is not a fast backend; if its fast failures entered
the average it would attract *more* traffic the worse it got (the "fast failure black hole" that
Finagle's failure accrual and Envoy's outlier detection exist for). A failed try therefore
observes ``max(rtt, penalty)`` with ``penalty = FAILURE_PENALTY_FACTOR * max(estimate(now),
pool average)``, capped at ``MAX_FAILURE_PENALTY_S``. The penalty is above the current estimate,
so it is taken as a peak: a failure never lowers the cost, and consecutive failures double it.

Cold start. A backend with no observation yet starts at the pool's average cost (the pool calls
``seed_rtt``), not zero: at zero every new backend would take all traffic until its first answers
came back. With no data anywhere it starts at ``DEFAULT_RTT_S``, linkerd's ``MIN_DEFAULT_RTT``
idea: a small, non-zero guess, so that in-flight counts still separate the cold backends.
"""

from __future__ import annotations

import math
from typing import ClassVar

# linkerd2-proxy's ``DEFAULT_RTT``/``MIN_DEFAULT_RTT`` idea: an optimistic guess (10 ms, a typical
# same-datacentre RTT) that is still non-zero so that ``(in_flight + 1)`` keeps mattering.
DEFAULT_RTT_S = 0.01
# A failed try counts as twice the worse of this backend's and the pool's estimate, so each
# consecutive failure doubles the cost, bounded so that recovery (decay) stays within minutes.
FAILURE_PENALTY_FACTOR = 2.0
MAX_FAILURE_PENALTY_S = 10.0


class Endpoint:
    """One backend with its live load signals. Identity survives config reloads (see pool.update).

    ``healthy`` (active checks) and ``ejected_until`` (outlier ejection) are properties: changing
    either bumps the class-wide ``state_epoch`` so a pool can tell, with one integer comparison
    per request, that its cached eligible set is out of date (Envoy rebuilds its healthy-host
    lists on membership/health updates, not per request).
    """

    __slots__ = (
        "_cost",
        "_ejected_until",
        "_healthy",
        "_stamp",
        "consecutive_failures",
        "decay_s",
        "ejection_level",
        "ejections",
        "has_data",
        "id",
        "in_flight",
        "url",
        "weight",
    )

    state_epoch: ClassVar[int] = 0

    def __init__(
        self,
        id: str,
        url: str,
        weight: float = 1.0,
        *,
        decay_s: float = 10.0,
        initial_rtt_s: float | None = None,
    ) -> None:
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"weight: must be a positive number, got {weight!r} for backend {id!r}")
        if not (math.isfinite(decay_s) and decay_s > 0):
            raise ValueError(f"decay_s: must be a positive number, got {decay_s!r}")
        if initial_rtt_s is not None and not (math.isfinite(initial_rtt_s) and initial_rtt_s >= 0):
            raise ValueError(f"initial_rtt_s: must be >= 0, got {initial_rtt_s!r}")
        self.id = id
        self.url = url
        self.weight = float(weight)
        self.decay_s = float(decay_s)
        self.in_flight = 0
        self.consecutive_failures = 0
        self.ejections = 0  # total, monotonic (exported as a counter)
        self.ejection_level = 0  # Envoy's num_ejections multiplier; decays while the backend behaves
        self._healthy = True
        self._ejected_until = 0.0
        self._cost = DEFAULT_RTT_S if initial_rtt_s is None else float(initial_rtt_s)
        # NaN: "never stamped". The pool's clock is monotonic and may start near zero or near
        # millions of seconds; a 0.0 stamp would decay the initial guess to nothing at once.
        self._stamp = math.nan
        self.has_data = initial_rtt_s is not None  # False until seeded or observed

    # -- state the pool's eligible set depends on ---------------------------------------------
    @property
    def healthy(self) -> bool:
        return self._healthy

    @healthy.setter
    def healthy(self, value: bool) -> None:
        if value != self._healthy:
            self._healthy = value
            Endpoint.state_epoch += 1

    @property
    def ejected_until(self) -> float:
        return self._ejected_until

    @ejected_until.setter
    def ejected_until(self, value: float) -> None:
        if value != self._ejected_until:
            self._ejected_until = value
            Endpoint.state_epoch += 1

    def is_ejected(self, now: float) -> bool:
        return now < self._ejected_until

    # -- peak-EWMA --------------------------------------------------------------------------
    def ewma_cost(self, now: float) -> float:
        """The estimate at ``now``: the stored cost decayed toward zero since it was stored."""
        elapsed = now - self._stamp
        if not elapsed > 0.0:  # also NaN: an initial guess does not decay before it is stamped
            return self._cost
        return self._cost * math.exp(-elapsed / self.decay_s)

    def load(self, now: float) -> float:
        return self.ewma_cost(now) * (self.in_flight + 1) / self.weight

    def observe(self, rtt_s: float, now: float, ok: bool, *, pool_cost_s: float = 0.0) -> None:
        """Fold one response time in; a failed try is penalised (see the module docstring)."""
        estimate = self.ewma_cost(now)
        if not ok:
            penalty = FAILURE_PENALTY_FACTOR * max(estimate, pool_cost_s, DEFAULT_RTT_S)
            rtt_s = max(rtt_s, min(penalty, MAX_FAILURE_PENALTY_S), estimate)
        if rtt_s > estimate or not self.has_data:  # a peak, or the first answer replaces the guess
            self._cost = rtt_s
        else:
            elapsed = now - self._stamp
            w = math.exp(-elapsed / self.decay_s) if elapsed > 0.0 else 1.0
            self._cost = self._cost * w + rtt_s * (1.0 - w)
        self._stamp = now if math.isnan(self._stamp) else max(now, self._stamp)
        self.has_data = True

    def seed_rtt(self, rtt_s: float, now: float) -> None:
        """Start a backend without observations at ``rtt_s`` (the pool's average); live data wins."""
        if self.has_data:
            return
        self._cost = rtt_s
        self._stamp = now
        self.has_data = True

    def __repr__(self) -> str:
        return f"Endpoint({self.id!r}, {self.url!r}, weight={self.weight})"
