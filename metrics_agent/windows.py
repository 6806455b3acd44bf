"""Window aggregates over the last W seconds: last, mean, max and least-squares slope.

Every tick adds one sample of all base metrics. For each window W the aggregates are kept
*incrementally*, so a tick costs O(metrics x windows) whatever W / interval is (at 0.1 s and
W = 60 s a window holds 600 samples; recomputing them each tick would cost the agent several
per cent of a core, the incremental form well under one):

* mean and slope from running sums. Ordinary least squares over the window's points (t_i, y_i)::

      slope = (n * S_ty - S_t * S_y) / (n * S_tt - S_t ** 2)

  with S_t = sum t_i, S_tt = sum t_i^2, S_y = sum y_i, S_ty = sum t_i y_i. Times are taken
  relative to an origin inside the window, and all sums are rebuilt from the stored samples once
  per window length of evictions (amortised O(1)), so neither the t^2 terms nor the floating
  error of add/subtract grow over a long run (the usual cure for catastrophic cancellation in
  running-sum variance; Chan, Golub & LeVeque 1983).
* max with a monotonic deque (the sliding-window maximum; Lemire 2006, "Streaming maximum-minimum
  filter using no more than three comparisons per element"): each metric keeps the candidates in
  decreasing order, the front is the window's max, each sample enters and leaves once.

A window with fewer than two samples, or all at one instant, has slope 0.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence


class SlidingWindow:
    """Aggregates of ``n_metrics`` series over the samples of the last ``seconds``."""

    __slots__ = (
        "_evicted",
        "_maxq",
        "_origin",
        "_rows",
        "_st",
        "_stt",
        "_sty",
        "_sy",
        "n_metrics",
        "seconds",
    )

    def __init__(self, seconds: float, n_metrics: int) -> None:
        if seconds <= 0:
            raise ValueError(f"window must be positive seconds, got {seconds!r}")
        self.seconds = float(seconds)
        self.n_metrics = n_metrics
        self._rows: deque[tuple[float, Sequence[float]]] = deque()
        self._maxq: list[deque[tuple[float, float]]] = [deque() for _ in range(n_metrics)]
        self._origin = 0.0
        self._evicted = 0
        self._reset_sums()

    def __len__(self) -> int:
        return len(self._rows)

    def _reset_sums(self) -> None:
        self._st = 0.0
        self._stt = 0.0
        self._sy = [0.0] * self.n_metrics
        self._sty = [0.0] * self.n_metrics

    def add(self, t: float, values: Sequence[float]) -> None:
        """Add the sample taken at monotonic time ``t`` (non-decreasing) and drop expired ones."""
        if len(values) != self.n_metrics:
            raise ValueError(f"expected {self.n_metrics} values, got {len(values)}")
        if not self._rows:
            self._origin = t
        rel = t - self._origin
        self._rows.append((t, values))
        self._st += rel
        self._stt += rel * rel
        self._sy = [s + y for s, y in zip(self._sy, values, strict=True)]
        self._sty = [s + rel * y for s, y in zip(self._sty, values, strict=True)]
        for q, y in zip(self._maxq, values, strict=True):
            while q and q[-1][1] <= y:
                q.pop()
            q.append((t, y))
        self._evict(t - self.seconds)

    def _evict(self, cutoff: float) -> None:
        rows = self._rows
        while rows and rows[0][0] <= cutoff:
            t_old, old = rows.popleft()
            rel = t_old - self._origin
            self._st -= rel
            self._stt -= rel * rel
            self._sy = [s - y for s, y in zip(self._sy, old, strict=True)]
            self._sty = [s - rel * y for s, y in zip(self._sty, old, strict=True)]
            self._evicted += 1
        for q in self._maxq:
            while q and q[0][0] <= cutoff:
                q.popleft()
        if self._evicted >= max(len(rows), 1):
            self._rebuild()

    def _rebuild(self) -> None:
        """Recompute the sums from the stored samples with the origin at the oldest one."""
        self._evicted = 0
        self._reset_sums()
        if not self._rows:
            return
        self._origin = self._rows[0][0]
        for t, values in self._rows:
            rel = t - self._origin
            self._st += rel
            self._stt += rel * rel
            self._sy = [s + y for s, y in zip(self._sy, values, strict=True)]
            self._sty = [s + rel * y for s, y in zip(self._sty, values, strict=True)]

    def aggregates(self) -> list[tuple[float, float, float]]:
        """Per metric ``(mean, max, slope)``; zeros while the window is empty."""
        n = len(self._rows)
        if n == 0:
            return [(0.0, 0.0, 0.0)] * self.n_metrics
        denom = n * self._stt - self._st * self._st
        # Two samples a whole tick apart give denom ~ interval^2 / 2; anything far below is one instant.
        flat = n < 2 or denom <= 1e-12
        out = []
        for sy, sty, q in zip(self._sy, self._sty, self._maxq, strict=True):
            slope = 0.0 if flat else (n * sty - self._st * sy) / denom
            out.append((sy / n, q[0][1], slope))
        return out


class WindowSet:
    """All configured windows; ``vector`` lays values out in ``schema.feature_names`` order."""

    def __init__(self, windows: Sequence[int], n_metrics: int) -> None:
        self.windows = tuple(windows)
        self.n_metrics = n_metrics
        self._windows = [SlidingWindow(w, n_metrics) for w in self.windows]

    def add(self, t: float, values: Sequence[float]) -> None:
        values = tuple(values)
        for window in self._windows:
            window.add(t, values)

    def vector(self, last: Sequence[float]) -> list[float]:
        """``metric`` (last), then ``mean, max, slope`` for each window, for every metric in turn."""
        per_window = [w.aggregates() for w in self._windows]
        out: list[float] = []
        for m, value in enumerate(last):
            out.append(value)
            for aggs in per_window:
                out.extend(aggs[m])
        return out
