"""Out-of-distribution guard: refuse to trust a model on inputs it never saw in training.

A learned predictor extrapolates badly (trees go flat, linear models run away), so inputs outside
the training range are routed by the fallback instead (the vPALs safeguard: a predictor must be
able to do no harm). The accepted interval of feature ``j`` is
``[min_j - tol * span_j, max_j + tol * span_j]`` with ``span_j = max_j - min_j``; a feature that was
constant in training gets ``tol * max(|min_j|, 1)`` of slack instead of none. NaN is never accepted.

``check`` is two vectorised comparisons against precomputed bounds; the worst feature is only
searched for when a check fails (the rare path).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .bundle import FeatureRange


class RangeGuard:
    def __init__(self, ranges: Mapping[str, FeatureRange], tolerance: float) -> None:
        if not tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
        self.names: tuple[str, ...] = tuple(ranges)
        self.tolerance = float(tolerance)
        lo = np.array([r.min for r in ranges.values()], dtype=np.float64)
        hi = np.array([r.max for r in ranges.values()], dtype=np.float64)
        span = hi - lo
        slack = self.tolerance * np.where(span > 0, span, np.maximum(np.abs(lo), 1.0))
        self._scale = np.where(span > 0, span, np.maximum(np.abs(lo), 1.0))
        self._lo64, self._hi64 = lo - slack, hi + slack
        # float32 bounds rounded outward, so a float32 input exactly at a bound is accepted
        self.lo = np.nextafter(self._lo64.astype(np.float32), np.float32(-np.inf))
        self.hi = np.nextafter(self._hi64.astype(np.float32), np.float32(np.inf))

    def check(self, x: np.ndarray) -> tuple[bool, str | None]:
        """``(True, None)`` when every row is in range; else ``(False, worst feature name)``."""
        if (x >= self.lo).all() and (x <= self.hi).all():
            return True, None
        return False, self._worst(x)

    def worst(self, row: np.ndarray) -> str:
        """The input of ``row`` (or rows) furthest outside its accepted interval."""
        return self._worst(np.atleast_2d(row))

    def _worst(self, x: np.ndarray) -> str:
        xf = np.asarray(x, dtype=np.float64)
        excess = np.maximum(self._lo64 - xf, xf - self._hi64) / self._scale
        excess = np.where(np.isnan(xf), np.inf, excess)
        return self.names[int(np.argmax(excess.max(axis=0)))]
