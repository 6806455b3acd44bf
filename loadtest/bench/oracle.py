"""``OraclePolicy``: a reference balancer that knows the testbed's hidden state.

Loaded by the proxy as a plugin, ``--policy loadtest.bench.oracle:OraclePolicy``, with the
environment variable ``PRESAGE_ORACLE_STATE`` naming the JSON that ``Testbed.write_hidden_state``
wrote (capacities, the interference schedule in wall time, the CPU work of each request size; see
``hidden_state.py``). It never ships in the proxy: no real balancer can know these things, so its
figures bound what prediction can win on the same run.

Decision: the endpoint with the lowest expected completion time of *this* request,

    T(b) = delay(b, t) + wait(b) + work(size) * work_mult(b) / speed(b, t, busy)

* ``busy = min(in_flight + 1, workers)``: this request and the ones this proxy already has there;
* ``speed = min(1, quota / busy) * prod(capacity_factor of the episodes active at t)``: the share
  of a core each busy worker gets under the CPU quota, reduced while noisy neighbours run;
* ``wait = max(0, in_flight + 1 - workers) * mean_work * work_mult / (speed * workers)``: the
  requests queued ahead, served ``workers`` at a time (the M/G/c queue seen as a fluid; the sizes
  of requests already in flight are unknown to a policy, so they count at the mean).

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

from .hidden_state import BackendCapacity, HiddenState, HiddenStateError, load_hidden_state

STATE_ENV = "PRESAGE_ORACLE_STATE"
RELOAD_CHECK_S = 1.0  # the harness rewrites the file when it restarts the schedule; look once a second


class OraclePolicy:
    name = "oracle"

    def __init__(
        self,
        state: HiddenState | None = None,
        *,
        path: str | None = None,
        wall_offset_s: float | None = None,
    ) -> None:
        """With no ``state``, read the file named by ``path`` or ``$PRESAGE_ORACLE_STATE``.

        ``wall_offset_s`` converts the ``now`` handed to ``pick`` into wall time; by default the
        current ``time.time() - time.monotonic()`` (the proxy passes monotonic time).
        """
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
        self.state = state
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
        factor, delay = 1.0, cap.delay_s
        for episode in self.state.active(backend, wall):
            factor *= episode.capacity_factor
            delay += episode.delay_s
        busy = min(in_flight + 1, cap.workers)
        speed = _core_share(cap, busy) * factor
        queued = max(0, in_flight + 1 - cap.workers)
        wait = queued * self.state.mean_work_s() * cap.work_mult / (speed * cap.workers)
        return delay + wait + work_s * cap.work_mult / speed

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
                self.state, self._mtime = load_hidden_state(self._path or ""), mtime
        except HiddenStateError:
            pass  # a file being rewritten: keep the last good state and look again next second


def _core_share(cap: BackendCapacity, busy: int) -> float:
    """Share of a core each of ``busy`` workers gets: all of one, or the quota split between them."""
    if cap.cpu_quota_cores is None:
        return 1.0
    return min(1.0, cap.cpu_quota_cores / busy)
