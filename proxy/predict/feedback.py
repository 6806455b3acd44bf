"""Completed tries' (decision, observed RTT) pairs, applied to the policy N at a time.

Per completed try the ``predicted`` policy learns four things: the RTT for its decision budget's
streaming median, the absolute percentage error for its live accuracy, the same error for the
``presage_prediction_error_ratio`` histogram, and the backend's latest prediction for the
``presage_predicted_latency_seconds`` gauge. Done per request that is three method calls, a
``bisect``, a dict store and a handful of float operations in the interpreter (several
microseconds of a request's ~100). ``Feedback.add`` appends the policy's ``Decision`` (it exists
already: no float is unboxed) and the RTT to two lists; every ``size`` pairs (and before every
metrics flush, admin read or live-accuracy publication) ``flush`` applies them in order: one numpy
pass computes the errors, fills the accuracy window (``LiveAccuracy.record_many``) and buckets
the histogram (``BatchedHistogram.observe_many``); the median follows the RTTs one by one in a
tight loop (``DecisionBudget.observe_rtts``), since each step depends on the last.

The result is the one per-request calls would give; the safeguards see it up to ``size`` tries
late, a few milliseconds at the request rates where the batching matters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..balancer.predicted import Decision, PredictedPolicy
    from ..metrics import BatchedHistogram

BATCH = 64


class Feedback:
    __slots__ = ("decisions", "histogram", "latest", "policy", "rtts", "size")

    def __init__(
        self, policy: PredictedPolicy, histogram: BatchedHistogram | None, size: int = BATCH
    ) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.policy = policy
        self.histogram = histogram
        self.size = size
        self.decisions: list[Decision] = []
        self.rtts: list[float] = []
        # backend id -> its latest prediction that was followed by an answer (the gauge, at 1 Hz)
        self.latest: dict[str, float] = {}

    def add(self, decision: Decision, rtt_s: float) -> None:
        """A try routed by ``decision`` succeeded after ``rtt_s`` (failed tries are not evidence
        and never come here); its ``predicted_s`` is NaN when the model did not score that backend."""
        self.decisions.append(decision)
        self.rtts.append(rtt_s)
        if len(self.rtts) >= self.size:
            self.flush()

    def flush(self) -> None:
        rtts = self.rtts
        if not rtts:
            return
        decisions, self.decisions, self.rtts = self.decisions, [], []
        predicted = [d.predicted_s for d in decisions]
        policy = self.policy
        policy.budget.observe_rtts(rtts)
        apes = policy.accuracy.record_many(np.array(predicted), np.array(rtts))
        if self.histogram is not None:
            self.histogram.observe_many(apes)
        latest = self.latest
        for d, p, rtt in zip(decisions, predicted, rtts, strict=True):
            if p == p and rtt > 0.0 and d.endpoint is not None:  # not NaN: the model scored it
                latest[d.endpoint.id] = p
