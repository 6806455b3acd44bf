"""Completed tries' (prediction, observed RTT) pairs, applied to the policy N at a time.

Per completed try the ``predicted`` policy learns three things: the RTT for its decision budget's
streaming median, the absolute percentage error for its live accuracy, and the same error for the
``presage_prediction_error_ratio`` histogram. Done per request that is three method calls, a
``bisect`` and a handful of float operations in the interpreter (several microseconds of a
request's ~100). ``Feedback.add`` appends two floats to two lists; every ``size`` pairs (and
before every metrics flush, admin read or live-accuracy publication) ``flush`` applies them in
order: one numpy pass computes the errors, fills the accuracy window (``LiveAccuracy.record_many``)
and buckets the histogram (``BatchedHistogram.observe_many``); the median follows the RTTs one by
one in a tight loop (``DecisionBudget.observe_rtts``), since each step depends on the last.

The result is the one per-request calls would give; the safeguards see it up to ``size`` tries
late, a few milliseconds at the request rates where the batching matters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..balancer.predicted import PredictedPolicy
    from ..metrics import BatchedHistogram

BATCH = 64


class Feedback:
    __slots__ = ("histogram", "policy", "predicted", "rtts", "size")

    def __init__(
        self, policy: PredictedPolicy, histogram: BatchedHistogram | None, size: int = BATCH
    ) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.policy = policy
        self.histogram = histogram
        self.size = size
        self.predicted: list[float] = []
        self.rtts: list[float] = []

    def add(self, predicted_s: float, rtt_s: float) -> None:
        """A try routed by the policy succeeded after ``rtt_s`` (failed tries are not evidence and
        never come here); ``predicted_s`` is NaN when the model did not score that backend."""
        self.predicted.append(predicted_s)
        self.rtts.append(rtt_s)
        if len(self.rtts) >= self.size:
            self.flush()

    def flush(self) -> None:
        rtts = self.rtts
        if not rtts:
            return
        predicted, self.predicted, self.rtts = self.predicted, [], []
        policy = self.policy
        policy.budget.observe_rtts(rtts)
        apes = policy.accuracy.record_many(np.array(predicted), np.array(rtts))
        if self.histogram is not None:
            self.histogram.observe_many(apes)
