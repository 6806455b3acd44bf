"""Simulated routing policies, one module each, chosen by name from ``POLICIES``."""

from __future__ import annotations

from collections.abc import Callable

from .base import SimPolicy
from .least_request import LeastRequest
from .peak_ewma import PeakEwma
from .predicted import Predicted, oracle
from .prequal import Prequal
from .random_pick import RandomPick
from .round_robin import RoundRobin

POLICIES: dict[str, Callable[[], SimPolicy]] = {
    "round_robin": RoundRobin,
    "random": RandomPick,
    "least_request": LeastRequest,
    "peak_ewma": PeakEwma,
    "prequal": Prequal,
    "predicted": Predicted,
    "oracle": oracle,
}
# What `predicted` has to beat: every policy that needs no model.
HEURISTICS: tuple[str, ...] = ("round_robin", "random", "least_request", "peak_ewma", "prequal")


def make_policy(name: str, accuracy: float = 1.0) -> SimPolicy:
    """A fresh policy by name; ``accuracy`` only concerns ``predicted``."""
    if name == "predicted":
        return Predicted(accuracy)
    factory = POLICIES.get(name)
    if factory is None:
        raise ValueError(f"policy: unknown {name!r} (known: {', '.join(POLICIES)})")
    return factory()


__all__ = ["HEURISTICS", "POLICIES", "SimPolicy", "make_policy"]
