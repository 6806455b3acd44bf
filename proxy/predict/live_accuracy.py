"""Rolling live accuracy of the RTT model: ``1 - MAPE`` over the last N observed requests.

The same definition as the training report (ARCHITECTURE.md, "Accuracy"), measured online on the
requests the proxy actually routed: for each completed request that had a prediction for its
backend, the absolute percentage error ``|pred - obs| / obs``. A ring buffer keeps the last
``window`` errors with a running sum, so ``record`` and ``accuracy`` are O(1).

Errors are clipped at ``max_ape`` (default 10, i.e. 1000 %): one pathological observation (a
retried request that took a timeout) must not hide what the model does on the other N-1.

The proxy feeds it in batches (``record_many``, from ``proxy.predict.feedback``): one numpy pass
over N observations instead of N Python calls; the window then holds exactly what N ``record``
calls would have left in it. ``value`` is the current accuracy as a plain attribute, read by every
decision without a call.
"""

from __future__ import annotations

import math

import numpy as np


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
        self.value: float | None = None  # = accuracy(), kept up to date for the decision path

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
        self._refresh()
        return ape

    def apes(self, predicted_s: np.ndarray, observed_s: np.ndarray) -> np.ndarray:
        """The clipped absolute percentage errors of the usable pairs (as ``record`` filters them).

        The unusable pairs are dropped before any arithmetic, so no NaN, infinity or zero divisor
        is ever computed on (and no ``errstate``, which costs more than the arithmetic, is needed)."""
        usable = (observed_s > 0.0) & np.isfinite(predicted_s) & np.isfinite(observed_s)
        o = observed_s[usable]
        return np.minimum(np.abs(predicted_s[usable] - o) / o, self.max_ape)

    def record_many(self, predicted_s: np.ndarray, observed_s: np.ndarray) -> np.ndarray:
        """``record`` for every pair, in order, in one pass; returns the errors of the usable ones."""
        apes = self.apes(predicted_s, observed_s)
        m = len(apes)
        if not m:
            return apes
        errors = self._errors
        window = len(errors)
        self.total += m
        tail = apes[-window:].tolist()  # only the last ``window`` can still be in it: plain floats
        k, start = len(tail), self._next
        first = min(k, window - start)  # up to the end of the ring, the rest from its start
        errors[start : start + first] = tail[:first]
        errors[: k - first] = tail[first:]
        self._next = (start + k) % window
        self._n = min(self._n + k, window)
        # summed afresh over the window: no running-sum drift, whatever was overwritten
        self._sum = sum(errors) if self._n == window else sum(self._filled())
        self._refresh()
        return apes

    def _filled(self) -> list[float]:
        """The entries written since the last reset (the buffer fills from ``_next - _n``)."""
        start = (self._next - self._n) % len(self._errors)
        if start + self._n <= len(self._errors):
            return self._errors[start : start + self._n]
        return self._errors[start:] + self._errors[: self._next]

    def _refresh(self) -> None:
        self.value = None if self._n < self.min_observations else 1.0 - self._sum / self._n

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
        self.value = None
