"""Completed tries' (decision, observed RTT) pairs, applied to the policy N at a time.

Per completed try the ``predicted`` policy learns four things: the RTT for its decision budget's
streaming median, the absolute percentage error for its live accuracy, the same error for the
``presage_prediction_error_ratio`` histogram, and the backend's latest prediction for the
``presage_predicted_latency_seconds`` gauge. Done per request that is three method calls, a
``bisect``, a dict store and a handful of float operations in the interpreter (several
microseconds of a request's ~100). ``Feedback.add`` appends the decision's prediction, its
endpoint and the RTT to three lists (no object is created); every ``size`` pairs (and before every
metrics flush, admin read or live-accuracy publication) ``flush`` applies them in order: one numpy
pass computes the errors, fills the accuracy window (``LiveAccuracy.record_many``) and buckets
the histogram (``BatchedHistogram.observe_many``); the median follows the RTTs one by one in a
tight loop (``DecisionBudget.observe_rtts``), since each step depends on the last.

The result is the one per-request calls would give; the safeguards see it up to ``size`` tries
late, tens of milliseconds at the request rates where the batching matters.
"""

from __future__ import annotations

from itertools import compress
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..balancer.endpoint import Endpoint
    from ..balancer.predicted import Decision, PredictedPolicy
    from ..metrics import BatchedHistogram

# A flush is a dozen numpy calls whose fixed cost dominates at this size (~25 us in a warm loop;
# py-spy put flushes near 300 us each inside a loaded proxy, where caches are cold). Fed 4,096
# decisions in a loop, 256 pairs per flush cost 0.74 us a request against 1.05 us at 64; the
# safeguards still hear within ~30 ms at 9,000 requests/s, and the 1 Hz sync flushes slow streams.
BATCH = 256


class Feedback:
    __slots__ = ("endpoints", "histogram", "latest", "policy", "predicted", "rtts", "size")

    def __init__(
        self, policy: PredictedPolicy, histogram: BatchedHistogram | None, size: int = BATCH
    ) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.policy = policy
        self.histogram = histogram
        self.size = size
        # Plain floats and the endpoints (which live on), not the decisions: a batch of retained
        # ``Decision`` objects is a net allocation of tracked containers, and every ~700 of those
        # trigger a cyclic collection (one per batch, ~150 us each in a loaded worker)
        self.predicted: list[float] = []
        self.endpoints: list[Endpoint | None] = []
        self.rtts: list[float] = []
        # backend id -> its latest prediction that was followed by an answer (the gauge, at 1 Hz)
        self.latest: dict[str, float] = {}

    def add(self, decision: Decision, rtt_s: float) -> None:
        """A try routed by ``decision`` succeeded after ``rtt_s`` (failed tries are not evidence
        and never come here); its ``predicted_s`` is NaN when the model did not score that backend."""
        self.predicted.append(decision.predicted_s)
        self.endpoints.append(decision.endpoint)
        self.rtts.append(rtt_s)
        if len(self.rtts) >= self.size:
            self.flush()

    def flush(self) -> None:
        rtts = self.rtts
        if not rtts:
            return
        predicted, endpoints = self.predicted, self.endpoints
        self.predicted, self.endpoints, self.rtts = [], [], []
        policy = self.policy
        policy.budget.observe_rtts(rtts)
        pred, obs = np.array(predicted), np.array(rtts)
        apes = policy.accuracy.record_many(pred, obs)
        if self.histogram is not None:
            self.histogram.observe_many(apes)
        # the gauge: each backend's last usable prediction; ``dict`` keeps the last of equal keys,
        # so the walk over the batch stays in C and only the distinct backends reach Python
        usable = ((pred == pred) & (obs > 0.0)).tolist()  # NaN: the model did not score it
        last = dict(zip(compress(endpoints, usable), compress(predicted, usable), strict=True))
        latest = self.latest
        for ep, p in last.items():
            if ep is not None:
                latest[ep.id] = p
