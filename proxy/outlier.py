"""Passive outlier ejection: Envoy's consecutive-5xx detector (``outlier_detection_impl.cc``).

* Each failed try (5xx, connect error, timeout; the caller decides) increments the backend's
  ``consecutive_failures``; any success resets it. Client aborts are not recorded at all.
* At ``consecutive_failures`` in a row the backend is ejected for ``base_ejection_s * level``,
  capped at ``max(base_ejection_s, max_ejection_s)``, where ``level`` (Envoy's ``num_ejections``)
  grows by one per ejection: a backend that keeps failing stays out longer each time.
* ``level`` falls back by one for every ``base_ejection_s`` the backend then spends in service
  without being ejected, as Envoy decrements it while the host behaves; a backend that failed
  once last week is not punished like one that failed a minute ago.
* Ejection is refused when it would put more than ``max_ejected_percent`` of the pool out, but at
  least one backend may always be ejected (Envoy's ``always_eject_one_host`` reasoning): with
  two backends and 50 %, one can go. Zero percent disables ejection.
* Un-ejection is implicit: a backend is ejected while ``now < ejected_until``; the pool notices
  the expiry when it next builds its eligible set.

When too many backends are out the pool's panic threshold routes to all of them anyway.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .balancer.endpoint import Endpoint

log = logging.getLogger("presage.outlier")


@dataclass(frozen=True)
class OutlierSettings:
    consecutive_failures: int = 5
    base_ejection_s: float = 30.0
    max_ejection_s: float = 300.0
    max_ejected_percent: float = 50.0
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1:
            raise ValueError(f"consecutive_failures: must be >= 1, got {self.consecutive_failures}")
        if not (math.isfinite(self.base_ejection_s) and self.base_ejection_s > 0):
            raise ValueError(f"base_ejection_s: must be > 0, got {self.base_ejection_s}")
        if not (math.isfinite(self.max_ejection_s) and self.max_ejection_s >= self.base_ejection_s):
            base, got = self.base_ejection_s, self.max_ejection_s
            raise ValueError(f"max_ejection_s: must be >= base_ejection_s ({base}), got {got}")
        if not 0.0 <= self.max_ejected_percent <= 100.0:
            raise ValueError(f"max_ejected_percent: must be within 0..100, got {self.max_ejected_percent}")


class OutlierDetector:
    """Decides ejections for one pool; the pool keeps ``endpoints`` current across reloads."""

    def __init__(self, settings: OutlierSettings, endpoints: Sequence[Endpoint] = ()) -> None:
        self.settings = settings
        self.endpoints: Sequence[Endpoint] = endpoints

    def record(self, endpoint: Endpoint, failed: bool, now: float) -> bool:
        """Count one try's result; True when this call ejected ``endpoint``."""
        if not failed:
            endpoint.consecutive_failures = 0
            return False
        if not self.settings.enabled or endpoint.is_ejected(now):
            return False  # late answers of an ejected backend do not extend its ejection
        endpoint.consecutive_failures += 1
        if endpoint.consecutive_failures < self.settings.consecutive_failures:
            return False
        if not self._room_for_one_more(now):
            return False
        self._eject(endpoint, now)
        return True

    def max_ejected(self) -> int:
        """How many backends may be out at once: the percentage cap, but at least one."""
        pct = self.settings.max_ejected_percent
        if pct <= 0.0:
            return 0
        return max(1, math.floor(len(self.endpoints) * pct / 100.0 + 1e-9))

    def ejection_s(self, level: int) -> float:
        s = self.settings
        return min(s.base_ejection_s * level, s.max_ejection_s)

    def _room_for_one_more(self, now: float) -> bool:
        ejected = sum(1 for ep in self.endpoints if ep.is_ejected(now))
        return ejected < self.max_ejected()

    def _eject(self, endpoint: Endpoint, now: float) -> None:
        # Envoy decrements num_ejections while the host stays in; one level per base period here.
        if endpoint.ejection_level and endpoint.ejected_until:
            behaved = max(now - endpoint.ejected_until, 0.0)
            endpoint.ejection_level = max(
                0, endpoint.ejection_level - int(behaved // self.settings.base_ejection_s)
            )
        endpoint.ejection_level += 1
        endpoint.ejections += 1
        duration = self.ejection_s(endpoint.ejection_level)
        endpoint.ejected_until = now + duration
        endpoint.consecutive_failures = 0
        log.warning(
            "backend %s ejected for %.1f s after %d consecutive failures (ejection %d)",
            endpoint.id,
            duration,
            self.settings.consecutive_failures,
            endpoint.ejections,
        )
