"""``round_robin``: rotation, or smooth weighted round robin when the weights differ.

Equal weights rotate an index, O(1). Different weights use an earliest-deadline-first schedule,
Envoy's ``EdfScheduler`` (``source/common/upstream/edf_scheduler.h``), which gives the two
properties of NGINX's smooth weighted round robin: over every cycle of ``sum(weights)`` picks each
backend gets exactly its weight (integer weights), and the picks of a heavy backend are spread
through the cycle instead of coming in one burst. NGINX's loop over every peer is O(n) per pick
(120 us for 1,000 mixed-weight backends in CPython); the heap makes it O(log n).

The ``k``-th pick of a backend of weight ``w`` is due at virtual time ``offset + (k + 0.5) / w``;
the earliest due backend goes next and the clock moves to its deadline. The half step centres
each backend's picks in its share of the cycle (5,1,1 gives ``a a a b c a a``). Deadlines are
kept per backend id, so a new candidate tuple (health change, reload, a retry's exclusions)
continues the same schedule; a backend that joins, or whose weight changes, starts at the
current virtual time rather than being owed a backlog.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence

from .base import Endpoint, RequestInfo


class RoundRobinPolicy:
    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0
        self._seen: Sequence[Endpoint] = ()
        self._uniform = True
        self._edf = EdfSchedule()

    def pick(
        self, endpoints: Sequence[Endpoint], request: RequestInfo, rng: random.Random, now: float
    ) -> Endpoint | None:
        n = len(endpoints)
        if n <= 1:
            return endpoints[0] if n else None
        if endpoints is not self._seen:  # the pool hands over one tuple until its state changes
            self._seen, self._uniform = endpoints, len({ep.weight for ep in endpoints}) == 1
        if self._uniform:
            self._next = (self._next + 1) % n
            return endpoints[self._next - 1]
        return self._edf.pick(endpoints)


class EdfSchedule:
    """Earliest deadline first over static weights; the heap is rebuilt per candidate tuple."""

    def __init__(self) -> None:
        self.vtime = 0.0
        self._due: dict[str, tuple[float, int, float]] = {}  # id -> (offset, picks, weight)
        self._heap: list[tuple[float, int]] = []  # (deadline, index into _members)
        self._members: Sequence[Endpoint] = ()

    def deadline(self, ep: Endpoint) -> float:
        state = self._due.get(ep.id)
        if state is None or state[2] != ep.weight:
            state = self._due[ep.id] = (self.vtime, 0, ep.weight)
        return state[0] + (state[1] + 0.5) / state[2]

    def pick(self, endpoints: Sequence[Endpoint]) -> Endpoint:
        if endpoints is not self._members:
            self._members = endpoints
            self._heap = [(self.deadline(ep), i) for i, ep in enumerate(endpoints)]
            heapq.heapify(self._heap)
        heap = self._heap
        while True:  # entries only go stale by being early; re-file them (lazy update)
            due, i = heap[0]
            ep = endpoints[i]
            actual = self.deadline(ep)
            if actual == due:
                break
            heapq.heapreplace(heap, (actual, i))
        offset, picks, weight = self._due[ep.id]
        self._due[ep.id] = (offset, picks + 1, weight)
        self.vtime = due
        heapq.heapreplace(heap, (offset + (picks + 1.5) / weight, i))
        return ep
