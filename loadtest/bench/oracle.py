"""``OraclePolicy``: a reference balancer that knows the testbed's hidden state.

Loaded by the proxy as a plugin, ``--policy loadtest.bench.oracle:OraclePolicy``, with the
environment variable ``PRESAGE_ORACLE_STATE`` naming the JSON that ``Testbed.write_hidden_state``
wrote (capacities, the interference schedule in wall time, the CPU work of each request size; see
``hidden_state.py``). It never ships in the proxy: no real balancer can know these things, so its
figures bound what prediction can win on the same run.

Decision: the endpoint with the lowest expected completion time of *this* request,

    T(b) = delay(b, t) + throttle(b, t) + wait(b) + cost(size, b) / speed(b, t, busy)

* ``cost = work(size) * work_mult + overhead``: the request's numpy work on this backend plus the
  CPU a request costs it beyond that (HTTP, hand-offs), which the bench measures per backend
  before any run (``calibrate.py``);
* ``busy = min(in_flight + 1, workers)``: this request and the ones this proxy already has there;
* ``speed = min(1, cores / (busy + k(t))) * penalty(t)``: CFS shares the backend's cores equally
  among its runnable threads, the request threads and the ``k`` threads of the noisy neighbours
  active at ``t`` (``hidden_state.py``), and cache/memory hogs stretch every step by ``penalty``;
* ``wait = max(0, in_flight + 1 - workers) * mean_cost / (speed * workers)``: the
  requests queued ahead, served ``workers`` at a time (the M/G/c queue seen as a fluid; the sizes
  of requests already in flight are unknown to a policy, so they count at the mix's mean);
* ``throttle``: CFS bandwidth control (Turner, Rao & Rao, "CPU bandwidth control for CFS", Linux
  Symposium 2010) lets a group run ``quota`` CPU-seconds per period ``P`` (the scenario's
  ``cpu_period_ms``, 100 ms by default) and then stops it until the next period. A noisy
  neighbour is always runnable, so with one in the group the quota runs out every period: the
  group runs for a share ``f = quota / min(runnable, cpus)`` of each period and is throttled for
  the rest. A request arriving at a uniform phase waits
  ``(1 - f)^2 * P / 2`` on average before it runs. Request threads alone rarely use up the quota
  at the loads of the testbed, so the term applies only while a neighbour runs (the fluid speed
  covers the rest). Measured on the testbed: a one-thread CPU hog in a 0.5-core group moved the
  mean RTT of 1-ms requests from 3.6 to 11.8 ms; the fluid model alone predicts 2 ms more, this
  term 12.5 ms more.

This refines "(in_flight + 1) x work / capacity": with that product the request's own size would
scale every backend alike and never change the choice, whereas here a small request may go to a
slow-but-idle backend and a large one to a fast backend with a short queue. Ties go to the first
endpoint. ``now`` is the proxy's monotonic clock; the schedule is in wall time, so the offset
between the two is taken once at start-up (both advance at the same rate).
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path

from proxy.balancer.base import Endpoint, RequestInfo

from .hidden_state import HiddenState, HiddenStateError, load_hidden_state

STATE_ENV = "PRESAGE_ORACLE_STATE"
RELOAD_CHECK_S = 0.25  # the harness rewrites the file when it restarts the schedule; a stat() 4x a second


class OraclePolicy:
    name = "oracle"

    def __init__(
        self,
        state: HiddenState | None = None,
        *,
        path: str | None = None,
        wall_offset_s: float | None = None,
        host_cpus: int | None = None,
    ) -> None:
        """With no ``state``, read the file named by ``path`` or ``$PRESAGE_ORACLE_STATE``.

        ``wall_offset_s`` converts the ``now`` handed to ``pick`` into wall time; by default the
        current ``time.time() - time.monotonic()`` (the proxy passes monotonic time). ``host_cpus``:
        the CPUs a cgroup's threads can run on at once (default: this process's affinity).
        """
        self.host_cpus = host_cpus or len(os.sched_getaffinity(0))
        self._path: Path | None = None
        self._mtime = 0.0
        self._next_check = 0.0
        if state is None:
            name = path or os.environ.get(STATE_ENV)
            if not name:
                raise HiddenStateError(f"oracle: set {STATE_ENV} to the testbed's hidden-state JSON")
            self._path = Path(name)
            self._mtime = self._stat()
            state = load_hidden_state(self._path)
        self._set_state(state)
        self.wall_offset_s = time.time() - time.monotonic() if wall_offset_s is None else wall_offset_s

    def pick(
        self, endpoints: Sequence[Endpoint], request: RequestInfo, rng: random.Random, now: float
    ) -> Endpoint | None:
        if len(endpoints) <= 1:
            return endpoints[0] if endpoints else None
        if self._path is not None and now >= self._next_check:
            self._maybe_reload(now)
        wall = now + self.wall_offset_s
        work = self.state.work_s(request.req_class)
        best, best_t = endpoints[0], math.inf
        for ep in endpoints:
            t = self.expected_completion_s(ep.id, ep.in_flight, work, wall)
            if t < best_t:
                best, best_t = ep, t
        return best

    def expected_completion_s(self, backend: str, in_flight: int, work_s: float, wall: float) -> float:
        """``T(b)`` of the module docstring; a backend absent from the hidden state is never preferred."""
        cap = self.state.backends.get(backend)
        if cap is None:
            return math.inf
        competing, penalty, delay = 0.0, 1.0, cap.delay_s
        for episode in self.state.active(backend, wall):
            competing += episode.competing
            penalty *= episode.penalty
            delay += episode.delay_s
        busy = min(in_flight + 1, cap.workers)
        speed = min(1.0, cap.cores / (busy + competing)) * penalty
        queued = max(0, in_flight + 1 - cap.workers)
        wait = queued * (self._mean_work_s * cap.work_mult + cap.overhead_s) / (speed * cap.workers)
        throttle = 0.0
        if competing > 0 and cap.quota_cores is not None:
            runnable = competing + min(in_flight, cap.workers)
            running_share = min(1.0, cap.quota_cores / min(runnable, self.host_cpus))
            throttle = (1.0 - running_share) ** 2 * self.state.cpu_period_s / 2.0
        return delay + throttle + wait + (work_s * cap.work_mult + cap.overhead_s) / speed

    def _set_state(self, state: HiddenState) -> None:
        self.state = state
        self._mean_work_s = state.mean_work_s()  # once per file, not per pick

    def _stat(self) -> float:
        assert self._path is not None
        try:
            return self._path.stat().st_mtime
        except OSError as exc:
            raise HiddenStateError(f"oracle: cannot read {self._path}: {exc}") from None

    def _maybe_reload(self, now: float) -> None:
        self._next_check = now + RELOAD_CHECK_S
        try:
            mtime = self._stat()
            if mtime != self._mtime:
                self._set_state(load_hidden_state(self._path or ""))
                self._mtime = mtime
        except HiddenStateError:
            pass  # a file being rewritten: keep the last good state and look again next second
