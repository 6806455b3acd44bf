"""The event loop: requests in arrival order, each FCFS multi-server queue advanced analytically.

A FCFS queue with ``c`` identical workers needs no per-event simulation: keeping the workers' free
times in a min-heap, a request arriving at ``t`` starts at ``max(t, heap[0])`` on the worker that
frees first and leaves at ``start + service`` (Kiefer & Wolfowitz 1955's workload recursion, the
multi-server form of Lindley's ``W_n+1 = max(0, W_n + S_n - A_n+1)``). Since a backend receives its
requests in arrival order, departure times are known at dispatch.

So the loop only needs events for what a *proxy* must learn later: one global heap of departures
``(done, backend, proxy, sent_at)``, popped when simulated time passes them, which decrements the
in-flight counts and lets the policy observe the RTT. Interference toggles and agent reports come
from ``Background``. Per request: a few list operations, two heap operations and the policy's
``pick`` — no per-request objects beyond the heap tuple. Arrivals, classes and service draws are
vectorised up front (``workload``), converted to lists one chunk at a time.

The slowdown of an interference episode applies to a whole request when the episode is on at the
moment its service starts (episodes last seconds, requests milliseconds).
"""

from __future__ import annotations

import time
from bisect import bisect_right
from dataclasses import dataclass, field
from heapq import heappop, heappush, heapreplace

import numpy as np

from .background import Background
from .policies import SimPolicy, make_policy
from .scenario import Scenario
from .state import SimState
from .workload import Workload, build_workload, stream
from .world import World, build_world, capacities


@dataclass(frozen=True, slots=True)
class Setup:
    """One scenario's world and workload, shared by every policy run on it."""

    scenario: Scenario
    world: World
    workload: Workload


@dataclass(slots=True)
class RunResult:
    policy: str
    accuracy: float | None
    setup: Setup
    backend: np.ndarray  # [n] chosen backend
    start: np.ndarray  # [n] service start
    done: np.ndarray  # [n] departure
    wall_s: float
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def rtt(self) -> np.ndarray:
        out: np.ndarray = self.done - self.setup.workload.arrival
        return out


def prepare(scenario: Scenario) -> Setup:
    rng = stream(scenario.seed, "world")
    capacity = capacities(scenario.backends, scenario.heterogeneity, rng)
    rate = scenario.load * scenario.capacity_rate(float(capacity.sum()))
    workload = build_workload(scenario, rate)
    last = float(workload.arrival[-1])
    # Queues may drain well after the last arrival; past the horizon the interference state holds.
    horizon = 2.0 * last + 10.0 * (scenario.interference_on_s + scenario.interference_off_s)
    world = build_world(scenario, capacity, horizon, rng)
    return Setup(scenario=scenario, world=world, workload=workload)


def simulate(setup: Setup, policy: str | SimPolicy, accuracy: float = 1.0) -> RunResult:
    """Run one policy over the setup's workload; deterministic for a given scenario seed."""
    pol = make_policy(policy, accuracy) if isinstance(policy, str) else policy
    sc = setup.scenario
    state = SimState.create(setup.world, sc.proxies)
    pol.bind(state, sc, stream(sc.seed, "policy"), stream(sc.seed, "noise"))
    background = Background(setup.world, state, sc, pol.needs_reports, stream(sc.seed, "agents"))
    started = time.perf_counter()
    backend, start, done = _loop(setup, state, pol, background)
    wall = time.perf_counter() - started
    acc = getattr(pol, "accuracy", None) if pol.name == "predicted" else None
    return RunResult(pol.name, acc, setup, backend, start, done, wall, pol.records())


def chunk_size(n_backends: int) -> int:
    """Requests converted to lists at a time: bounded memory, and a policy scoring every backend
    draws ``chunk * n_backends`` noise values per chunk."""
    return int(min(65536, max(1024, (1 << 22) // n_backends)))


def _loop(
    setup: Setup, state: SimState, pol: SimPolicy, background: Background
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    wl, world = setup.workload, setup.world
    n = wl.n
    out_b = np.empty(n, dtype=np.int64)
    out_start, out_done = np.empty(n), np.empty(n)
    heap: list[tuple[float, int, int, float]] = []
    local, nsys, free, inv_cap = state.local, state.nsys, state.free, state.inv_cap
    toggles, slowdown = world.toggles, world.slowdown
    observe, dispatched, pick = pol.observe, pol.dispatched, pol.pick

    def drain(until: float) -> None:
        while heap and heap[0][0] <= until:
            d, b, p, sent = heappop(heap)
            local[p][b] -= 1
            nsys[b] -= 1
            if observe is not None:
                observe(b, p, d - sent, d)

    next_bg = background.next_time()
    step = chunk_size(state.n)
    for s in range(0, n, step):
        e = min(n, s + step)
        arrivals, base, proxies = wl.arrival[s:e].tolist(), wl.base_s[s:e].tolist(), wl.proxy[s:e].tolist()
        pol.prepare(wl.cls[s:e].tolist())
        chosen: list[int] = []
        starts: list[float] = []
        dones: list[float] = []
        for j, t in enumerate(arrivals):
            if t >= next_bg:
                next_bg = background.advance(t, drain)
            if heap and heap[0][0] <= t:
                drain(t)
            p = proxies[j]
            b = pick(j, t, p)
            workers = free[b]
            first = workers[0]
            begin = first if first > t else t
            service = base[j] * inv_cap[b]
            tg = toggles[b]
            if tg and bisect_right(tg, begin) & 1:
                service *= slowdown
            d = begin + service
            heapreplace(workers, d)
            heappush(heap, (d, b, p, t))
            local[p][b] += 1
            nsys[b] += 1
            if dispatched is not None:
                dispatched(b, p, workers[0])
            chosen.append(b)
            starts.append(begin)
            dones.append(d)
        out_b[s:e], out_start[s:e], out_done[s:e] = chosen, starts, dones
    return out_b, out_start, out_done
