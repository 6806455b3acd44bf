"""The backends of one configuration and who may receive the next request.

``eligible(now)`` is healthy (active checks) and not ejected (outlier detection). It is an
immutable tuple rebuilt only when some endpoint's health or ejection changed (the endpoint state
epoch moved) or the earliest ejection expired, never per request (Envoy rebuilds its host sets on
updates; ``least_request_lb.h`` ``refresh()``). When the eligible share falls below
``panic_threshold_percent`` the pool routes to *all* backends (Envoy's panic threshold): a
proxy that sends traffic to possibly-bad backends degrades, one that sends it nowhere fails.

``begin``/``end`` bracket every try: in-flight counts, peak-EWMA (failed tries penalised, client
aborts ignored: the client leaving says nothing about the backend) and outlier detection.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections.abc import Callable, Collection, Sequence
from typing import Any

from .balancer.base import Policy, RequestInfo
from .balancer.endpoint import Endpoint
from .outlier import OutlierDetector, OutlierSettings

log = logging.getLogger("presage.pool")


class Outcome(enum.Enum):
    OK = "ok"
    HTTP_5XX = "5xx"
    CONNECT_ERROR = "connect_error"
    TIMEOUT = "timeout"
    CLIENT_ABORT = "client_abort"


BackendSpec = tuple[str, str, float]  # (id, url, weight)


class BackendPool:
    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        policy: Policy,
        *,
        outlier: OutlierSettings,
        panic_threshold_percent: float = 50.0,
        clock: Callable[[], float],
    ) -> None:
        if not 0.0 <= panic_threshold_percent <= 100.0:
            raise ValueError(f"panic_threshold_percent: must be within 0..100, got {panic_threshold_percent}")
        self.policy = policy
        self.clock = clock
        self.panic_threshold_percent = panic_threshold_percent
        self.detector = OutlierDetector(outlier)
        self.panic = False  # whether the current eligible set is the panic set (all backends)
        self.panic_picks = 0  # choices made in panic mode
        self.rebuilds = 0
        self._endpoints: tuple[Endpoint, ...] = ()
        self._eligible: tuple[Endpoint, ...] = ()
        self._epoch = -1
        self._next_expiry = float("inf")
        self._set_endpoints(tuple(endpoints), clock())

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self._endpoints

    # -- the request path -------------------------------------------------------------------
    def eligible(self, now: float) -> tuple[Endpoint, ...]:
        if self._epoch != Endpoint.state_epoch or now >= self._next_expiry:
            self._rebuild(now)
        return self._eligible

    def choose(
        self, request: RequestInfo, rng: random.Random, now: float, exclude: Collection[str] = ()
    ) -> Endpoint | None:
        """Pick among the eligible backends, minus ``exclude`` (ids already tried by this request)."""
        candidates: Sequence[Endpoint] = self.eligible(now)
        if exclude:
            candidates = [ep for ep in candidates if ep.id not in exclude]
        if not candidates:
            return None
        if self.panic:
            self.panic_picks += 1
        return self.policy.pick(candidates, request, rng, now)  # type: ignore[return-value]

    def begin(self, ep: Endpoint, now: float) -> None:
        ep.in_flight += 1

    def end(self, ep: Endpoint, now: float, rtt_s: float, outcome: Outcome) -> None:
        if ep.in_flight > 0:
            ep.in_flight -= 1
        if outcome is Outcome.CLIENT_ABORT:
            return
        ok = outcome is Outcome.OK
        if ok:
            ep.observe(rtt_s, now, True)
        else:  # failures only: the O(n) average is not paid on the fast path
            ep.observe(rtt_s, now, False, pool_cost_s=self.average_cost(now) or 0.0)
        self.detector.record(ep, not ok, now)

    # -- configuration ----------------------------------------------------------------------
    def update(self, new: Sequence[BackendSpec]) -> None:
        """Swap in a new backend list, keeping the live Endpoint of every id whose URL is unchanged."""
        check_specs(new)  # before anything live is touched: a bad reload changes nothing
        old = {ep.id: ep for ep in self._endpoints}
        decay_s = self._endpoints[0].decay_s if self._endpoints else 10.0
        endpoints = []
        for id_, url, weight in new:
            ep = old.get(id_)
            if ep is None or ep.url != url:
                ep = Endpoint(id_, url, weight, decay_s=decay_s)
            else:
                ep.weight = float(weight)
            endpoints.append(ep)
        self._set_endpoints(tuple(endpoints), self.clock())

    def average_cost(self, now: float) -> float | None:
        """Mean peak-EWMA estimate of the backends that have data (None when none has)."""
        return self._average_of(self._endpoints, now)

    def snapshot_json(self, now: float) -> list[dict[str, Any]]:
        """Per-backend state for ``/v1/backends`` and the 1 Hz gauge sync."""
        return [
            {
                "id": ep.id,
                "url": ep.url,
                "weight": ep.weight,
                "healthy": ep.healthy,
                "ejected": ep.is_ejected(now),
                "ejected_until": ep.ejected_until if ep.is_ejected(now) else None,
                "ejections": ep.ejections,
                "consecutive_failures": ep.consecutive_failures,
                "in_flight": ep.in_flight,
                "ewma_s": ep.ewma_cost(now),
                "load": ep.load(now),
            }
            for ep in self._endpoints
        ]

    # -- internals --------------------------------------------------------------------------
    def _set_endpoints(self, endpoints: tuple[Endpoint, ...], now: float) -> None:
        check_specs([(ep.id, ep.url, ep.weight) for ep in endpoints])
        average = self._average_of(endpoints, now)
        if average is not None:
            for ep in endpoints:
                ep.seed_rtt(average, now)  # no-op for endpoints that have data
        self._endpoints = endpoints
        self.detector.endpoints = endpoints
        self._rebuild(now)

    @staticmethod
    def _average_of(endpoints: Sequence[Endpoint], now: float) -> float | None:
        costs = [ep.ewma_cost(now) for ep in endpoints if ep.has_data]
        return sum(costs) / len(costs) if costs else None

    def _rebuild(self, now: float) -> None:
        self._epoch = Endpoint.state_epoch
        ready = tuple(ep for ep in self._endpoints if ep.healthy and not ep.is_ejected(now))
        expiries = [ep.ejected_until for ep in self._endpoints if ep.is_ejected(now)]
        self._next_expiry = min(expiries, default=float("inf"))
        total = len(self._endpoints)
        panic = bool(total) and len(ready) * 100.0 < self.panic_threshold_percent * total
        if panic != self.panic:
            level = logging.WARNING if panic else logging.INFO
            log.log(
                level,
                "panic mode %s: %d of %d backends eligible",
                "on" if panic else "off",
                len(ready),
                total,
            )
        self.panic = panic
        self._eligible = self._endpoints if panic else ready
        self.rebuilds += 1


def check_specs(specs: Sequence[BackendSpec]) -> None:
    """Unique ids and positive finite weights, or a ``ValueError`` naming the backend."""
    seen: set[str] = set()
    for id_, _url, weight in specs:
        if id_ in seen:
            raise ValueError(f"backends: duplicate backend id {id_!r}")
        seen.add(id_)
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"backends: weight of {id_!r} must be a positive number, got {weight!r}")
