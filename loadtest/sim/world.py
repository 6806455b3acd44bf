"""The backends: capacities and hidden interference episodes.

Capacities are log-uniformly spread so that the fastest is ``heterogeneity`` times the slowest
(geometric mean 1), evenly spaced in log space and shuffled: a small fleet gets the whole spread
instead of whatever a few random draws give.

Interference (a noisy neighbour, a GC storm, a throttled cgroup) is a two-state continuous-time
Markov chain per backend: off periods last Exp(``interference_off_s``), episodes last
Exp(``interference_on_s``), and the chain starts from its stationary law (on with probability
``p_on``; by memorylessness the first residual period has the same law). Episodes are drawn up to a
horizon and stored per backend as sorted toggle times: the backend is inside an episode at time
``t`` iff ``bisect_right(toggles, t)`` is odd.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scenario import Scenario


@dataclass(frozen=True, slots=True)
class World:
    capacity: np.ndarray  # [N] service-rate multiplier
    servers: np.ndarray  # [N] workers per backend
    toggles: tuple[tuple[float, ...], ...]  # per backend, see module docstring
    slowdown: float

    @property
    def n(self) -> int:
        return int(self.capacity.shape[0])

    def interfered_at(self, b: int, t: float) -> bool:
        return int(np.searchsorted(np.asarray(self.toggles[b]), t, side="right")) % 2 == 1


def build_world(
    scenario: Scenario, capacity: np.ndarray, horizon_s: float, rng: np.random.Generator
) -> World:
    n = scenario.backends
    servers = np.full(n, scenario.servers, dtype=np.int64)
    toggles = interference_toggles(scenario, n, horizon_s, rng)
    return World(capacity=capacity, servers=servers, toggles=toggles, slowdown=scenario.slowdown)


def capacities(n: int, heterogeneity: float, rng: np.random.Generator) -> np.ndarray:
    if n == 1:
        return np.ones(1)
    exponents = np.linspace(-0.5, 0.5, n) * np.log(heterogeneity)
    return np.exp(rng.permutation(exponents))


def interference_toggles(
    scenario: Scenario, n: int, horizon_s: float, rng: np.random.Generator
) -> tuple[tuple[float, ...], ...]:
    p_on = scenario.p_on
    if p_on == 0.0:
        return tuple(() for _ in range(n))
    on_s, off_s = scenario.interference_on_s, scenario.interference_off_s
    starts_on = rng.random(n) < p_on
    # Enough alternating periods to pass the horizon with room to spare; rows that still fall
    # short are extended one by one below (rare).
    m = int(2 * horizon_s / (on_s + off_s) * 1.5) + 8
    raw = rng.exponential(1.0, size=(n, m))
    even_is_on = starts_on[:, None]
    column_even = (np.arange(m) % 2 == 0)[None, :]
    means = np.where(even_is_on == column_even, on_s, off_s)
    ends = np.cumsum(raw * means, axis=1)
    out: list[tuple[float, ...]] = []
    for b in range(n):
        row = ends[b]
        while row[-1] < horizon_s:
            mean_next = on_s if (starts_on[b] == (row.shape[0] % 2 == 0)) else off_s
            row = np.append(row, row[-1] + rng.exponential(mean_next))
        cut = row[row < horizon_s]
        head = [0.0] if starts_on[b] else []
        out.append(tuple(head + cut.tolist()))
    return tuple(out)
