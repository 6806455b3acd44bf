"""Completed tries' (decision, observed RTT) pairs, applied to the policy N at a time.

Per completed try the ``predicted`` policy learns five things: the RTT for its decision budget's
streaming median, the (prediction, RTT) pair for the live refit of the model's level
(``predictor_runtime.calibration``), the absolute percentage error of the calibrated prediction
for its live accuracy, the same error for the ``presage_prediction_error_ratio`` histogram, and
the backend's latest calibrated prediction for the ``presage_predicted_latency_seconds`` gauge.
Done per request that is three method calls, a ``bisect``, a dict store and a handful of float
operations in the interpreter (several microseconds of a request's ~100). ``Feedback.add``
appends the decision's prediction, its endpoint and the RTT to one flat list (no object outlives
the call); every ``size`` pairs (and before every metrics flush, admin read or live-accuracy
publication) ``flush`` applies them in order: one numpy pass computes the errors, fills the
accuracy window (``LiveAccuracy.record_many``), refits the level (``LevelCalibration.record_many``)
and buckets the histogram (``BatchedHistogram.observe_many``); the decision budget takes a large
batch's median RTT, or follows a small batch's RTTs one step at a time
(``DecisionBudget.observe_rtts``).

The result is the one per-request calls would give (but for the median of a large batch, and for
the level, which a batch's errors see as it was fitted before the batch); the safeguards see it up
to ``size`` tries late, ~0.1 s at the request rates where batching matters.
"""

from __future__ import annotations

from itertools import compress
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..balancer.endpoint import Endpoint
    from ..balancer.predicted import Decision, PredictedPolicy
    from ..metrics import BatchedHistogram

# A flush's cost is mostly fixed (a dozen numpy calls: ~250 us inside a loaded worker, where
# caches are cold, measured with a timing wrapper around ``flush``), so a large batch amortises
# it: 1,024 tries cost ~0.25 us each. The safeguards then hear within ~0.1 s at 10,000
# requests/s, and the 1 Hz sync flushes slower streams; a batch larger than the accuracy window
# leaves the window holding its latest tries, as per-try calls would.
BATCH = 1024


class Feedback:
    __slots__ = ("full", "histogram", "items", "latest", "policy", "size")

    def __init__(
        self, policy: PredictedPolicy, histogram: BatchedHistogram | None, size: int = BATCH
    ) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.policy = policy
        self.histogram = histogram
        self.size = size
        # prediction, endpoint, RTT per try, flat: plain floats and the endpoints (which live on),
        # not the decisions. A batch of retained ``Decision`` tuples is a net allocation of
        # tracked containers, and every ~700 of those trigger a cyclic collection (one per batch,
        # ~150 us each in a loaded worker); one list extended by three is also one call a try.
        self.items: list[Any] = []
        self.full = 3 * size  # items in a full batch (``DecisionTap.completed`` adds inline too)
        # backend id -> its latest prediction that was followed by an answer (the gauge, at 1 Hz)
        self.latest: dict[str, float] = {}

    def add(self, decision: Decision, rtt_s: float) -> None:
        """A try routed by ``decision`` succeeded after ``rtt_s`` (failed tries are not evidence
        and never come here); its ``predicted_s`` is NaN when the model did not score that backend."""
        items = self.items
        items += (decision.predicted_s, decision.endpoint, rtt_s)
        if len(items) >= self.full:
            self.flush()

    @property
    def pending(self) -> int:
        """Tries added since the last flush."""
        return len(self.items) // 3

    def flush(self) -> None:
        items = self.items
        if not items:
            return
        self.items = []
        predicted: list[float] = items[0::3]  # type: ignore[assignment]
        endpoints: list[Endpoint | None] = items[1::3]  # type: ignore[assignment]
        rtts: list[float] = items[2::3]  # type: ignore[assignment]
        policy = self.policy
        policy.budget.observe_rtts(rtts)
        # ``fromiter`` converts a list of floats at twice ``np.array``'s speed (no per-item type discovery)
        pred = np.fromiter(predicted, dtype=np.float64, count=len(predicted))
        obs = np.fromiter(rtts, dtype=np.float64, count=len(rtts))
        # errors of the calibrated predictions, at the level fitted before this batch (causal), then
        # the batch joins the refit
        calibration = policy.calibration
        scale = calibration.scale
        shown = pred * scale if scale != 1.0 else pred
        apes = policy.accuracy.record_many(shown, obs)
        calibration.record_many(pred, obs)
        if self.histogram is not None:
            self.histogram.observe_many(apes)
        # the gauge: each backend's last usable prediction; ``dict`` keeps the last of equal keys,
        # so the walk over the batch stays in C and only the distinct backends reach Python
        usable = ((pred == pred) & (obs > 0.0)).tolist()  # NaN: the model did not score it
        last = dict(zip(compress(endpoints, usable), compress(predicted, usable), strict=True))
        latest = self.latest
        for ep, p in last.items():
            if ep is not None:
                latest[ep.id] = p * scale
