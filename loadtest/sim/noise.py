"""Prediction noise of a given accuracy: multiplicative log-normal, calibrated in closed form.

A prediction is ``truth * X`` with ``X = exp(sigma * Z)``, ``Z ~ N(0, 1)``: median-unbiased, errors
symmetric in log space (over- and under-prediction by the same factor are equally likely), never
negative. Accuracy is ``1 - MAPE`` (ARCHITECTURE.md), and for this ``X``

    MAPE(sigma) = E|X - 1| = exp(sigma^2 / 2) * erf(sigma / sqrt(2))

(split ``E|X - 1|`` at ``Z = 0`` and use ``E[exp(sigma Z); Z > 0] = exp(sigma^2/2) * Phi(sigma)``).
It grows monotonically from 0, so ``sigma_for_accuracy`` inverts it by bisection.
"""

from __future__ import annotations

import math

MAX_SIGMA = 10.0


def mape_of_sigma(sigma: float) -> float:
    return math.exp(sigma * sigma / 2.0) * math.erf(sigma / math.sqrt(2.0))


def sigma_for_accuracy(accuracy: float) -> float:
    """The ``sigma`` whose noise has ``1 - MAPE == accuracy`` (0 for a perfect predictor)."""
    if not math.isfinite(accuracy):
        raise ValueError(f"accuracy: not finite ({accuracy!r})")
    target = 1.0 - accuracy
    if target <= 0.0:
        return 0.0
    if target >= mape_of_sigma(MAX_SIGMA):
        raise ValueError(f"accuracy: {accuracy!r} is below what the noise model reaches")
    lo, hi = 0.0, MAX_SIGMA
    for _ in range(100):
        mid = (lo + hi) / 2.0
        if mape_of_sigma(mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0
