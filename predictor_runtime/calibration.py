"""The level of an RTT model's predictions: fitted once at training, refitted on live traffic.

``presage train`` calibrates a bundle's level on its validation rows (``mape_scale``: the constant
that minimises MAPE, stored as the bundle's ``scale``). That level is the training run's. The host
under a later run is not the same host, and a bundle's predictions carry the old level into the
new run: on the testbed's 2-vCPU VM, a later run of ``checksum-quiet`` scored 80.9 % at its
bundle's level and 89.3 % with this refit, the run's noise check being 89.8 % (README, "Accuracy
on a later run"). ``LevelCalibration`` refits the same constant online, over the last ``window``
completed requests, in the spirit of Metronome's online learning: the model keeps its shape
(which backend is faster, how RTT grows with in-flight work), the proxy keeps its level current.

One factor for every backend multiplies every prediction alike, so it never changes which backend
is cheapest: routing is untouched. What it changes is every absolute use of a prediction: live
accuracy (and so the minimum-accuracy safeguard, which then measures the model's shape, not the
host's drift), the predicted-latency gauge, the explain header and the hedge delay.

The factor is causal: a request's calibrated prediction uses only requests that had completed
before it was dispatched, and until ``min_observations`` have completed it is 1 (the bundle's own
level). ``replay`` computes what a proxy would have applied over a recording (refitting after every
completion, where the proxy refits once a feedback batch), which is how ``presage train --assess``
reports accuracy with the live refit beside the exported level.
"""

from __future__ import annotations

import heapq

import numpy as np

# A factor this far from 1 means the fit is broken, not biased; training and live refits clip to it.
SCALE_BOUNDS = (0.1, 10.0)
# The live window: long enough that one slow request moves the weighted median little (the
# testbed's per-request scatter is 15-20 % MAPE), short enough to follow a level shift within a
# few seconds of traffic. On 13 recorded testbed runs, windows of 50, 200 and 1,000 requests, per
# backend or over all, ranked differently from run to run (up to 3.5 points apart); one factor
# over the last 200 lost nowhere more than 0.2 points against the exported level.
DEFAULT_WINDOW = 200
DEFAULT_MIN_OBSERVATIONS = 50


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The smallest value at which the cumulative weight reaches half the total."""
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])


def mape_scale(observed_s: np.ndarray, predicted_s: np.ndarray) -> float:
    """The constant ``c`` minimising MAPE of ``c * predicted`` against ``observed``.

    A model fit by squared error on log RTT predicts the conditional *median* (for log-normal
    noise, also the geometric mean); MAPE is minimised lower, at the median of the distribution
    re-weighted by 1/RTT (for log-normal noise of spread s, the median times exp(-s^2)): an
    over-prediction of a short request costs more than the same miss on a long one. With ``r_i =
    y_i / p_i``, ``sum |c p_i - y_i| / y_i = sum (p_i / y_i) |c - r_i|``, so ``c`` is the weighted
    median of ``r`` with weights ``p / y``. One scale for every row leaves the ranking of backends,
    and so every routing decision, unchanged; it moves only the level of the estimate.
    """
    obs = np.asarray(observed_s, dtype=np.float64)
    pred = np.asarray(predicted_s, dtype=np.float64)
    ok = (obs > 0) & (pred > 0) & np.isfinite(obs) & np.isfinite(pred)
    if not ok.any():
        return 1.0
    c = weighted_median(obs[ok] / pred[ok], pred[ok] / obs[ok])
    return float(np.clip(c, *SCALE_BOUNDS))


class LevelCalibration:
    """``mape_scale`` over the last ``window`` usable (predicted, observed) pairs, as ``scale``.

    ``scale`` is a plain attribute, read without a call; it is refitted by ``record_many`` (one
    numpy pass a batch: the proxy's feedback flush) and by ``record`` every ``refit_every`` pairs
    (the shadow policy's per-request path). Pairs with a non-positive or non-finite side are not
    evidence and are skipped, as live accuracy skips them. ``window=0`` turns it off: ``scale``
    stays 1 whatever is recorded.
    """

    __slots__ = (
        "_n", "_next", "_obs", "_pred", "_since", "min_observations", "refit_every", "scale", "window",
    )  # fmt: skip

    def __init__(
        self, window: int = DEFAULT_WINDOW, *, min_observations: int = DEFAULT_MIN_OBSERVATIONS
    ) -> None:
        if window < 0:
            raise ValueError("window must be >= 0 (0: off)")
        if window and not 1 <= min_observations <= window:
            raise ValueError("min_observations must be between 1 and window")
        self.window = window
        self.min_observations = min_observations
        self.refit_every = max(1, window // 8)
        self._pred = np.zeros(window, dtype=np.float64)
        self._obs = np.zeros(window, dtype=np.float64)
        self._n = self._next = self._since = 0
        self.scale = 1.0

    @property
    def count(self) -> int:
        """Pairs in the window."""
        return self._n

    def reset(self) -> None:
        """Forget every pair (a new model has its own level)."""
        self._n = self._next = self._since = 0
        self.scale = 1.0

    def record(self, predicted_s: float, observed_s: float) -> None:
        """One completed request; the scale is refitted every ``refit_every`` usable pairs."""
        if not self.window or not (0.0 < predicted_s < np.inf and 0.0 < observed_s < np.inf):
            return
        i = self._next
        self._pred[i], self._obs[i] = predicted_s, observed_s
        self._next = (i + 1) % self.window
        self._n = min(self._n + 1, self.window)
        self._since += 1
        if self._since >= self.refit_every:
            self._refit()

    def record_many(self, predicted_s: np.ndarray, observed_s: np.ndarray) -> None:
        """``record`` for every pair, in order, then one refit."""
        if not self.window:
            return
        ok = (predicted_s > 0.0) & (observed_s > 0.0) & np.isfinite(predicted_s) & np.isfinite(observed_s)
        pred, obs = predicted_s[ok][-self.window :], observed_s[ok][-self.window :]
        k = len(pred)
        if not k:
            return
        idx = (self._next + np.arange(k)) % self.window
        self._pred[idx], self._obs[idx] = pred, obs
        self._next = (self._next + k) % self.window
        self._n = min(self._n + k, self.window)
        self._refit()

    def _refit(self) -> None:
        self._since = 0
        n = self._n
        if n < self.min_observations:
            return
        self.scale = mape_scale(self._obs[:n], self._pred[:n])  # the filled slots, in any order


def replay(
    dispatched_s: np.ndarray,
    rtt_s: np.ndarray,
    predicted_s: np.ndarray,
    *,
    window: int = DEFAULT_WINDOW,
    min_observations: int = DEFAULT_MIN_OBSERVATIONS,
) -> np.ndarray:
    """Each request's prediction times the live factor a proxy would have applied at its dispatch.

    Requests are taken in dispatch order; one that completed (dispatch + RTT) before another was
    dispatched has been recorded by then, one still in flight has not. The factor is refitted after
    every completion here, where the proxy refits once per feedback batch: the proxy's factor lags
    this one by at most a batch.
    """
    ts = np.asarray(dispatched_s, dtype=np.float64)
    rtt = np.asarray(rtt_s, dtype=np.float64)
    pred = np.asarray(predicted_s, dtype=np.float64)
    if not (len(ts) == len(rtt) == len(pred)):
        raise ValueError("dispatch times, RTTs and predictions must have the same length")
    cal = LevelCalibration(window, min_observations=min_observations)
    cal.refit_every = 1
    out = pred.copy()
    pending: list[tuple[float, int]] = []  # (completion time, row), earliest first
    for i in np.argsort(ts, kind="stable"):
        t = ts[i]
        while pending and pending[0][0] <= t:
            _, j = heapq.heappop(pending)
            cal.record(pred[j], rtt[j])
        out[i] = pred[i] * cal.scale
        heapq.heappush(pending, (t + rtt[i], int(i)))
    return out
