"""``random``: a uniformly random backend per request."""

from __future__ import annotations

from .base import SimPolicy


class RandomPick(SimPolicy):
    name = "random"

    def prepare(self, cls: list[int]) -> None:
        self.draws: list[int] = self.rng.integers(0, self.state.n, size=len(cls)).tolist()

    def pick(self, j: int, t: float, p: int) -> int:
        return self.draws[j]
