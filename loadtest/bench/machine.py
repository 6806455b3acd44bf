"""How busy the machine was *outside* the bench while a run was measured.

On a shared 2-core machine another process's burst changes every latency of a run, whatever the
policy, so each run records the CPU that processes outside the bench's own process tree (the
harness, its testbed, proxies, balancers, stress-ng) used during it. ``foreign_cores`` is the
CPU-seconds they used over the run's wall time: 0.0 on an otherwise idle machine, 1.0 when one core
was taken away for the whole run. Processes that started and ended within the run are not seen
(their CPU is lost with them), so the figure is a lower bound.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class CpuSnapshot:
    wall: float
    mine: frozenset[int]
    cpu_s: dict[int, float]  # pid -> user + system CPU seconds, every process


def _tree() -> set[int]:
    me = psutil.Process()
    pids = {me.pid}
    for child in me.children(recursive=True):
        pids.add(child.pid)
    return pids


def snapshot() -> CpuSnapshot:
    cpu: dict[int, float] = {}
    for proc in psutil.process_iter(["cpu_times"]):
        times = proc.info.get("cpu_times")
        if times is not None:
            cpu[proc.pid] = times.user + times.system
    return CpuSnapshot(time.monotonic(), frozenset(_tree()), cpu)


def foreign_cores(before: CpuSnapshot, after: CpuSnapshot) -> float:
    """Cores' worth of CPU used between the snapshots by processes outside the bench's tree."""
    mine = before.mine | after.mine
    used = sum(
        after.cpu_s[pid] - before.cpu_s[pid]
        for pid in after.cpu_s.keys() & before.cpu_s.keys()
        if pid not in mine and after.cpu_s[pid] >= before.cpu_s[pid]
    )
    wall = after.wall - before.wall
    return used / wall if wall > 0 else 0.0


def load_average() -> float:
    return os.getloadavg()[0]
