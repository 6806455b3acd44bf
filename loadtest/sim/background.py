"""Events that are not requests, in time order: interference toggles and agent reports.

An agent samples its backend every ``interval_s`` at its own phase (agents are not synchronised)
and the sample reaches the proxies ``delay_s`` later; a proxy's report view therefore lags the
truth by ``delay_s`` to ``delay_s + interval_s``. A sample records the backend's requests in
system, its interference state and, for every proxy, that proxy's in-flight count at the sampling
instant, so that a proxy can correct the report with what it dispatched since.

``advance(t, drain)`` applies every event due by ``t``; before each one it lets the engine
complete the requests that finished earlier (``drain``), so a sample sees exactly the state at
its instant.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from .scenario import Scenario
from .state import SimState
from .world import World

INF = float("inf")


class Background:
    def __init__(
        self, world: World, state: SimState, scenario: Scenario, reports: bool, rng: np.random.Generator
    ) -> None:
        self.state = state
        self.slowdown = world.slowdown
        times, owners = _merged_toggles(world)
        self.toggle_t: list[float] = times.tolist()
        self.toggle_b: list[int] = owners.tolist()
        self.toggle_i = 0
        self.reports = reports
        self.interval, self.delay = scenario.interval_s, scenario.delay_s
        phases = rng.random(world.n) * scenario.interval_s
        self.order: list[int] = np.argsort(phases, kind="stable").tolist()
        self.phase: list[float] = np.sort(phases).tolist()
        self.round, self.pos = 0, 0
        self.pending: deque[tuple[float, int, float, float, list[int]]] = deque()

    def next_time(self) -> float:
        toggle = self.toggle_t[self.toggle_i] if self.toggle_i < len(self.toggle_t) else INF
        if not self.reports:
            return toggle
        sample = self.round * self.interval + self.phase[self.pos]
        publish = self.pending[0][0] if self.pending else INF
        return min(toggle, sample, publish)

    def advance(self, t: float, drain: Callable[[float], None]) -> float:
        """Apply every event due by ``t``; return the time of the next one."""
        while True:
            nxt = self.next_time()
            if nxt > t:
                return nxt
            drain(nxt)
            self._apply_one(nxt)

    def _apply_one(self, now: float) -> None:
        # Ties: toggles first, then samples, then deliveries (a zero delay delivers at once).
        if self.toggle_i < len(self.toggle_t) and self.toggle_t[self.toggle_i] == now:
            self._toggle(self.toggle_b[self.toggle_i])
            self.toggle_i += 1
        elif self.reports and self.round * self.interval + self.phase[self.pos] == now:
            self._sample(self.order[self.pos], now)
            self.pos += 1
            if self.pos == len(self.order):
                self.pos, self.round = 0, self.round + 1
        else:
            self._deliver()

    def _toggle(self, b: int) -> None:
        st = self.state
        value = 1.0 if st.slow_now[b] != 1.0 else self.slowdown
        st.slow_now[b] = value
        st.slow_arr[b] = value

    def _sample(self, b: int, now: float) -> None:
        st = self.state
        local = [row[b] for row in st.local]
        self.pending.append((now + self.delay, b, float(st.nsys[b]), st.slow_now[b], local))

    def _deliver(self) -> None:
        _, b, nsys, slow, local = self.pending.popleft()
        st = self.state
        st.report_n[b] = nsys
        st.report_slow[b] = slow
        st.report_local[:, b] = local


def _merged_toggles(world: World) -> tuple[np.ndarray, np.ndarray]:
    """Every backend's toggles after t=0 (the state at 0 is the initial state), time-ordered."""
    times = [np.asarray(tg, dtype=np.float64) for tg in world.toggles]
    owners = [np.full(len(tg), b, dtype=np.int64) for b, tg in enumerate(world.toggles)]
    if not times:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    t, o = np.concatenate(times), np.concatenate(owners)
    keep = t > 0.0
    t, o = t[keep], o[keep]
    order = np.lexsort((o, t))
    return t[order], o[order]
