"""``round_robin``: each proxy cycles through the backends in order, blind to their state.

Every proxy starts at its own offset (``p * n / K``), as independent replicas would.
"""

from __future__ import annotations

from .base import SimPolicy


class RoundRobin(SimPolicy):
    name = "round_robin"

    def setup(self) -> None:
        n, k = self.state.n, self.state.proxies
        self.next = [(p * n) // k for p in range(k)]

    def pick(self, j: int, t: float, p: int) -> int:
        b = self.next[p]
        self.next[p] = b + 1 if b + 1 < self.state.n else 0
        return b
