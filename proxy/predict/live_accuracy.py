"""Rolling live accuracy of the RTT model: ``1 - MAPE`` over the last N observed requests.

The same definition as the training report (ARCHITECTURE.md, "Accuracy"), measured online on the
requests the proxy actually routed: for each completed request that had a prediction for its
backend, the absolute percentage error ``|pred - obs| / obs``. A ring buffer keeps the last
``window`` errors with a running sum, so ``record`` and ``accuracy`` are O(1).

Errors are clipped at ``max_ape`` (default 10, i.e. 1000 %): one pathological observation (a
retried request that took a timeout) must not hide what the model does on the other N-1.
"""

from __future__ import annotations

import math


class LiveAccuracy:
    def __init__(self, window: int = 500, *, min_observations: int = 50, max_ape: float = 10.0) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        if not 1 <= min_observations <= window:
            raise ValueError("min_observations must be between 1 and window")
        # a list, not a numpy array: one float per request, and numpy scalars are slow to set
        # and turn the running sum into a numpy float
        self._errors = [0.0] * window
        self._n = 0
        self._next = 0
        self._sum = 0.0
        self.min_observations = min_observations
        self.max_ape = max_ape
        self.total = 0

    def record(self, predicted_s: float, observed_s: float) -> float | None:
        """Add one observation; returns its absolute percentage error, or None if unusable."""
        if not (observed_s > 0.0 and math.isfinite(predicted_s) and math.isfinite(observed_s)):
            return None
        ape = min(abs(predicted_s - observed_s) / observed_s, self.max_ape)
        window = len(self._errors)
        if self._n == window:
            self._sum -= self._errors[self._next]
        else:
            self._n += 1
        self._errors[self._next] = ape
        self._sum += ape
        self._next = (self._next + 1) % window
        self.total += 1
        return ape

    @property
    def count(self) -> int:
        return self._n

    def accuracy(self) -> float | None:
        """``1 - MAPE`` over the window, or None until ``min_observations`` were seen."""
        if self._n < self.min_observations:
            return None
        # Recompute from the buffer now and then would remove float drift; the window is small
        # and values bounded, so drift stays far below the threshold's resolution.
        return 1.0 - self._sum / self._n

    def reset(self) -> None:
        self._n = self._next = 0
        self._sum = 0.0
