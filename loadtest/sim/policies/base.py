"""What a simulated policy is: per-chunk randomness, then one ``pick`` per request.

The engine calls ``bind`` once (which calls ``setup``), ``prepare(cls)`` before every chunk of
requests (a policy draws its random numbers for the chunk in one vectorised call, from its own
seeded stream), then ``pick(j, t, p)`` for the chunk's ``j``-th request arriving at ``t`` through proxy ``p``.
``pick`` reads the shared ``SimState``, never writes it.

Optional hooks, left ``None`` when unused so that the loop skips the call: ``observe(b, p, rtt,
now)`` when proxy ``p`` sees a response from ``b``; ``dispatched(b, p, next_free)`` after a
dispatch. ``needs_reports`` asks the engine to run the agents (report sampling and delivery).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..scenario import Scenario
from ..state import SimState

Observe = Callable[[int, int, float, float], None]
Dispatched = Callable[[int, int, float], None]


class SimPolicy:
    name = "policy"
    needs_reports = False

    def __init__(self) -> None:
        self.observe: Observe | None = None
        self.dispatched: Dispatched | None = None
        self.state: SimState
        self.scenario: Scenario
        self.rng: np.random.Generator
        self.noise_rng: np.random.Generator

    def bind(
        self, state: SimState, scenario: Scenario, rng: np.random.Generator, noise_rng: np.random.Generator
    ) -> None:
        self.state, self.scenario, self.rng, self.noise_rng = state, scenario, rng, noise_rng
        self.setup()

    def setup(self) -> None:
        """Per-run state, once ``state`` and ``scenario`` are bound."""

    def prepare(self, cls: list[int]) -> None:
        """Draw this chunk's randomness; ``cls`` are its requests' class indices."""

    def pick(self, j: int, t: float, p: int) -> int:
        raise TypeError(f"{type(self).__name__} does not implement pick")

    def records(self) -> dict[str, np.ndarray]:
        """Per-request extras for the metrics (``pred_s``, ``expected_s``), in request order."""
        return {}


def distinct_pairs(rng: np.random.Generator, n: int, m: int) -> tuple[list[int], list[int]]:
    """``m`` pairs of distinct backends, uniform over pairs: draw ``a``, then ``b`` among the
    other ``n - 1`` by skipping over ``a`` (Finagle ``P2CPick``, linkerd ``gen_pair``)."""
    if n == 1:
        zeros = [0] * m
        return zeros, zeros
    a = rng.integers(0, n, size=m)
    b = rng.integers(0, n - 1, size=m)
    b += b >= a
    return a.tolist(), b.tolist()


def distinct_choices(rng: np.random.Generator, n: int, m: int, d: int) -> np.ndarray:
    """``m`` rows of ``d`` distinct backends (``d <= n``), uniform over subsets.

    Sequential sampling without replacement, vectorised over rows: the ``k``-th draw is uniform on
    ``[0, n - k)`` and is shifted past every earlier pick it reaches, taken in increasing order.
    """
    d = min(d, n)
    out = np.empty((m, d), dtype=np.int64)
    for k in range(d):
        r = rng.integers(0, n - k, size=m)
        if k:
            for prev in np.sort(out[:, :k], axis=1).T:
                r += r >= prev
        out[:, k] = r
    return out
