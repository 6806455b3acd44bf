"""What the simulator costs: wall time at 10, 100 and 1,000 backends, per policy, on one core.

Each point builds the scenario (``prepare``), runs one policy (``simulate``) and summarises it
(``summarize``); all three are timed, the total is what a user waits. ``cpu_s`` is the process CPU
time of the whole point (``time.process_time``): on a core shared with other work the wall time
overstates the simulator's cost, the CPU time does not. The process is pinned to a
single CPU for the run (``os.sched_setaffinity``) so the figures are one-core figures even where numpy
could use more. Peak RSS is the process's high-water mark so far (``ru_maxrss``), so it only grows
along the table.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .engine import prepare, simulate
from .metrics import summarize
from .scenario import Scenario

BACKENDS: tuple[int, ...] = (10, 100, 1000)
REQUESTS = 1_000_000
POLICIES: tuple[str, ...] = ("round_robin", "least_request", "peak_ewma", "prequal", "predicted", "oracle")


@dataclass(frozen=True, slots=True)
class ScalePoint:
    backends: int
    requests: int
    policy: str
    prepare_s: float
    simulate_s: float
    summarize_s: float
    total_s: float
    cpu_s: float
    us_per_request: float
    simulated_s: float  # simulated time span of the workload
    peak_rss_mb: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def one_core() -> Iterator[int | None]:
    """Restrict this process to one CPU (the lowest it may use) for the block, then restore the
    previous set; yields the CPU, or None where affinity is not supported."""
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    before = os.sched_getaffinity(0)
    cpu = min(before)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)


def scale_benchmark(
    base: Scenario,
    backends: Sequence[int] = BACKENDS,
    requests: int = REQUESTS,
    policies: Sequence[str] = POLICIES,
    accuracy: float = 0.9,
    log: Callable[[str], None] | None = None,
) -> list[ScalePoint]:
    points: list[ScalePoint] = []
    for n in backends:
        scenario = base.with_(backends=n, requests=requests)
        for policy in policies:
            points.append(_measure(scenario, policy, accuracy))
            if log is not None:
                p = points[-1]
                log(f"  {n} backends x {requests} requests, {policy}: {p.total_s:.1f} s, {p.cpu_s:.1f} s CPU")
    return points


def _measure(scenario: Scenario, policy: str, accuracy: float) -> ScalePoint:
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    setup = prepare(scenario)
    t1 = time.perf_counter()
    result = simulate(setup, policy, accuracy)
    t2 = time.perf_counter()
    summarize(result)
    t3 = time.perf_counter()
    cpu = time.process_time() - cpu0
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ScalePoint(
        backends=scenario.backends,
        requests=scenario.requests,
        policy=policy,
        prepare_s=t1 - t0,
        simulate_s=t2 - t1,
        summarize_s=t3 - t2,
        total_s=t3 - t0,
        cpu_s=cpu,
        us_per_request=(t2 - t1) / scenario.requests * 1e6,
        simulated_s=float(setup.workload.arrival[-1]),
        peak_rss_mb=rss_kb / 1024.0,
    )
