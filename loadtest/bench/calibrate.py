"""Warm-up and calibration: each backend's CPU cost per request beyond its numpy work.

The testbed measures the work of each request size on an idle core (``size_work_s``), but a
request costs its backend more than that: HTTP parsing, the hand-off to the worker pool, the
response, the agent's scrapes — all in the same CPU group, all paid from the same quota. On a
0.3-core backend that overhead is a large share of the capacity, and an oracle that ignored it
would send a weak backend far more than it can serve (measured: the first testbed runs put 48
req/s on a 0.3-core backend the numpy work alone rated at 68 req/s, and its RTT went to 230 ms).

So before anything is measured, the first seconds of the collection's arrival sequence go
straight to the backends (each gets every n-th request, no proxy, no interference) and
``overhead_s = (CPU used by the group - sum of work_s(size) * work_mult) / requests served``. The
same seconds warm the backends up (allocator, FFT plans, connection buffers), so the first policy
evaluated does not meet colder backends than the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import numpy as np
import psutil

from loadtest.loadgen import run_open_loop

from .workload import Workload

CLASS_HEADER = "X-Presage-Class"


def cpu_seconds(testbed: Any, backend_id: str) -> float | None:
    """CPU used so far by a backend: its cgroup, else its process (and children); None if unknown."""
    usage = testbed.cpu_usage_s(backend_id)
    if usage is not None:
        return float(usage)
    pid = testbed.pids.get(backend_id)
    if pid is None:
        return None
    with contextlib.suppress(psutil.Error):
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system + t.children_user + t.children_system)
    return None


async def calibrate(testbed: Any, workload: Workload, seconds: float) -> dict[str, Any]:
    """Load every backend directly for ``seconds``; returns per-backend requests, CPU and overhead."""
    backends = list(testbed.backends)
    n = len(backends)
    keep = workload.arrivals < seconds
    arrivals, sizes = workload.arrivals[keep], workload.sizes[keep]
    state = testbed.hidden_state(time.time())
    work = {float(k): float(v) for k, v in state["size_work_s"].items()}
    mult = {b["id"]: float(b["work_mult"]) for b in state["backends"]}
    before = {bid: cpu_seconds(testbed, bid) for bid, _ in backends}
    results = await asyncio.gather(
        *(
            run_open_loop(
                url,
                arrivals[i::n],
                sizes=sizes[i::n],
                class_header=CLASS_HEADER,
                duration_s=seconds,
                connections=4,
                timeout_s=10.0,
            )
            for i, (_, url) in enumerate(backends)
        )
    )
    out: dict[str, Any] = {}
    for (bid, _), result in zip(backends, results, strict=True):
        after = cpu_seconds(testbed, bid)
        ok = result.ok
        served = int(ok.sum())
        entry: dict[str, Any] = {"requests": served, "cpu_s": None, "overhead_s": None}
        start = before[bid]
        if after is not None and start is not None and served > 0:
            used = after - start
            numpy_work = float(sum(work.get(float(s), 0.0) for s in result.sizes[ok])) * mult.get(bid, 1.0)
            entry.update(cpu_s=used, overhead_s=max(0.0, (used - numpy_work) / served))
            entry["rtt_p50_s"] = float(np.median(result.rtt_s[ok]))
        out[bid] = entry
    return out
