"""The mutable simulation state the engine owns and the policies read.

Hot fields are plain Python lists: the event loop touches a handful of them per request, and a
list subscript costs a third of a numpy scalar access. The agent reports, written once per backend
per interval, are numpy arrays so that a policy scoring every backend can read them vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .world import World


@dataclass(slots=True)
class SimState:
    n: int
    proxies: int
    servers: list[int]
    inv_cap: list[float]
    inv_cap_arr: np.ndarray
    servers_arr: np.ndarray
    # Per backend, a min-heap of its workers' free times: FCFS with c workers means the next
    # request starts at max(arrival, heap[0]) on the worker that frees first (Kiefer-Wolfowitz).
    free: list[list[float]]
    nsys: list[int]  # requests at the backend (queued + in service), from every proxy
    local: list[list[int]]  # [proxy][backend] in-flight as that proxy knows it
    slow_now: list[float]  # service-time multiplier right now (1.0, or the slowdown in an episode)
    slow_arr: np.ndarray  # the same, as an array
    report_n: np.ndarray  # last delivered agent report: requests at the backend
    report_slow: np.ndarray  # ... and its slowdown state
    report_local: np.ndarray  # [proxy, backend]: that proxy's in-flight when the report was sampled

    @classmethod
    def create(cls, world: World, proxies: int) -> SimState:
        n = world.n
        slow0 = [world.slowdown if world.interfered_at(b, 0.0) else 1.0 for b in range(n)]
        inv_cap = (1.0 / world.capacity).astype(np.float64)
        return cls(
            n=n,
            proxies=proxies,
            servers=world.servers.tolist(),
            inv_cap=inv_cap.tolist(),
            inv_cap_arr=inv_cap,
            servers_arr=world.servers.astype(np.float64),
            free=[[0.0] * int(c) for c in world.servers],
            nsys=[0] * n,
            local=[[0] * n for _ in range(proxies)],
            slow_now=slow0,
            slow_arr=np.array(slow0),
            report_n=np.zeros(n),
            report_slow=np.array(slow0),
            report_local=np.zeros((proxies, n)),
        )
