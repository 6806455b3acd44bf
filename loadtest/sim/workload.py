"""The request stream, drawn once per scenario and shared by every policy (common random numbers).

Every policy of a comparison sees the same arrival times, classes, service draws and proxy
assignment, so differences between policies are differences of routing, not of luck. Each
ingredient has its own seeded stream (``stream``), so adding a policy's randomness never shifts the
workload's.

* Arrivals: a Poisson process of rate ``lambda`` (see ``scenario``); with a rate trace, a
  non-homogeneous Poisson process by time rescaling: unit-rate Poisson epochs ``E_k`` mapped
  through the inverse of the cumulative intensity ``Lambda(t) = lambda * integral(scale)``
  (Cinlar; Lewis & Shedler 1979 discuss the alternative, thinning).
* Service: ``service_mean_s * factor_class * u`` at capacity 1, ``u`` of mean 1: log-normal with
  ``sigma^2 = ln(1 + cv^2)``, exponential, or inverse-CDF sampling from calibrated quantiles.
* Proxy: each request enters through a proxy chosen uniformly (clients spread over replicas).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scenario import Scenario

STREAMS: dict[str, int] = {
    "world": 1,
    "arrivals": 2,
    "service": 3,
    "proxy": 4,
    "policy": 5,
    "noise": 6,
    "agents": 7,
}


def stream(seed: int, name: str) -> np.random.Generator:
    """An independent generator per ingredient: ``default_rng([seed, id])`` (SeedSequence entropy)."""
    return np.random.default_rng([seed, STREAMS[name]])


@dataclass(frozen=True, slots=True)
class Workload:
    arrival: np.ndarray  # [n] float64, non-decreasing
    cls: np.ndarray  # [n] int64 class index
    base_s: np.ndarray  # [n] float64 service seconds at capacity 1, outside episodes
    proxy: np.ndarray  # [n] int64
    rate: float  # base arrival rate, requests/s

    @property
    def n(self) -> int:
        return int(self.arrival.shape[0])


def build_workload(scenario: Scenario, rate: float) -> Workload:
    n, seed = scenario.requests, scenario.seed
    arrival = arrival_times(stream(seed, "arrivals"), n, rate, scenario.trace)
    srv = stream(seed, "service")
    cls = srv.choice(len(scenario.classes), size=n, p=np.asarray(scenario.class_probs))
    units = unit_draws(scenario, cls, srv)
    factors = np.asarray(scenario.class_factors)
    base_s = scenario.service_mean_s * factors[cls] * units
    proxy = stream(seed, "proxy").integers(0, scenario.proxies, size=n)
    return Workload(arrival=arrival, cls=cls, base_s=base_s, proxy=proxy, rate=rate)


def arrival_times(
    rng: np.random.Generator, n: int, rate: float, trace: tuple[tuple[float, float], ...] | None
) -> np.ndarray:
    epochs = np.cumsum(rng.exponential(1.0, size=n))
    if trace is None:
        return epochs / rate
    return _invert_intensity(epochs, rate, trace)


def _invert_intensity(epochs: np.ndarray, rate: float, trace: tuple[tuple[float, float], ...]) -> np.ndarray:
    """``Lambda^-1(E)`` for a step scale: ``(t_i, r_i)`` holds ``r_i`` on ``[t_i, t_i+1)``, the first
    scale also before ``t_0`` and the last one forever after."""
    points = dict(trace)  # a repeated time keeps its last scale
    points.setdefault(0.0, trace[0][1])
    knots = np.array(sorted(points))
    scales = np.array([points[t] for t in knots.tolist()])
    cum = np.concatenate(([0.0], np.cumsum(np.diff(knots) * scales[:-1] * rate)))
    inside = epochs <= cum[-1]
    out = np.empty_like(epochs)
    # Lambda is piecewise linear between knots, so is its inverse (flat pieces have measure 0).
    out[inside] = np.interp(epochs[inside], cum, knots)
    out[~inside] = knots[-1] + (epochs[~inside] - cum[-1]) / (rate * scales[-1])
    return out


def unit_draws(scenario: Scenario, cls: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = cls.shape[0]
    if scenario.service_dist == "exponential":
        return np.asarray(rng.exponential(1.0, size=n))
    if scenario.service_dist == "lognormal":
        if scenario.service_cv == 0.0:
            return np.ones(n)
        sigma2 = np.log1p(scenario.service_cv**2)
        return np.asarray(rng.lognormal(-sigma2 / 2.0, np.sqrt(sigma2), size=n))
    u = np.asarray(rng.random(n))
    out = np.empty(n)
    assert scenario.service_quantiles is not None  # checked by Scenario
    for k, table in enumerate(scenario.service_quantiles):
        sel = cls == k
        grid = np.linspace(0.0, 1.0, len(table))
        out[sel] = np.interp(u[sel], grid, np.asarray(table))
    return out
