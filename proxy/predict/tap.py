"""What the data plane tells the prediction machinery about each try, and what it hears back.

The data plane calls ``dispatched`` just before a try goes out (before ``pool.begin``, so the
in-flight counts recorded are the ones the policy saw) and ``completed`` when its response head
arrived or it failed. In between the ``Ticket`` carries what the decision knew:

* the ``predicted`` policy's ``Decision`` (its prediction for the chosen backend), turned into live
  accuracy, prediction error and the explain header;
* in shadow mode, the shadow's decision, scored against the live choice;
* for a sampled share of requests, a pending training sample (``proxy.recorder``): a reference to
  the immutable feature snapshot plus each candidate's proxy-local signals, no copy of a vector.

Everything here is O(candidates) arithmetic on objects that already exist; gauges are copied at
1 Hz by ``sync`` rather than set per request, and the ``predicted`` policy's feedback (RTT median,
live accuracy, prediction error, the latest prediction per backend) is handed over in batches
(``proxy.predict.feedback``).

The common case, ``--policy predicted`` with no shadow, exploration or recording, allocates
nothing: the ticket is the policy's own ``Decision`` (it already names the backend), and
``completed`` appends it to the feedback batch. Every other case carries a ``Ticket``;
``decision_of`` reads the decision from either.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..balancer.base import Endpoint, RequestInfo
from ..balancer.explore import ExplorePolicy
from ..balancer.predicted import Decision, PredictedPolicy
from ..balancer.shadow import ShadowPolicy
from ..metrics import BatchedHistogram, Metrics
from ..pool import BackendPool
from ..recorder import PendingSample, SampleRecorder, local_signals


class Ticket:
    __slots__ = ("backend", "decision", "explored", "pending", "shadow")

    def __init__(
        self,
        backend: Endpoint,
        decision: Decision | None,
        shadow: Decision | None,
        pending: PendingSample | None,
        explored: bool,
    ) -> None:
        self.backend = backend
        self.decision = decision
        self.shadow = shadow
        self.pending = pending
        self.explored = explored


class DecisionTap:
    def __init__(
        self,
        *,
        policy_name: str,
        metrics: Metrics,
        predicted: PredictedPolicy | None = None,
        shadow: ShadowPolicy | None = None,
        explore: ExplorePolicy | None = None,
        recorder: SampleRecorder | None = None,
        features: Any = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy_name = policy_name
        self.metrics = metrics
        self.predicted = predicted
        self.shadow = shadow
        self.explore = explore
        self.recorder = recorder
        self.features = features
        self.rng = rng or random.Random()
        self.wall_clock = wall_clock
        self.prediction_error: BatchedHistogram = metrics.batched_prediction_error
        if predicted is not None:
            predicted.feedback.histogram = self.prediction_error
        # only the live policy's decision travels with a try: the ticket can be the Decision itself
        self._plain = predicted is not None and shadow is None and explore is None and recorder is None
        self.shadow_choices: dict[str, int] = {}
        self.shadow_agreed = 0
        self.shadow_total = 0
        self._rows_of: tuple[Any, dict[str, int]] = (None, {})

    # -- request path -----------------------------------------------------------------------------
    def dispatched(
        self,
        ep: Endpoint,
        pool: BackendPool,
        info: RequestInfo,
        request_id: str,
        now: float,
    ) -> Ticket | Decision | None:
        """What ``completed`` needs about this try: the policy's ``Decision`` alone when nothing
        else is tracked, else a ``Ticket``. ``pool``'s eligible endpoints are the candidates a
        recorded sample lists; they are only looked up for the sampled requests."""
        if self._plain:
            last = self.predicted.last  # type: ignore[union-attr]
            return last if last.endpoint is ep else None
        explored = self.explore.explored if self.explore is not None else False
        decision = None
        if self.predicted is not None and not explored:
            last = self.predicted.last
            if last.endpoint is ep:
                decision = last
        shadow = self.shadow.last_shadow if self.shadow is not None else None
        pending = None
        recorder = self.recorder
        if recorder is not None and recorder.wants(self.rng.random()):
            pending = self._pending(ep, pool.eligible(now), info, request_id, now, explored)
        if decision is None and shadow is None and pending is None and not explored:
            return None  # (an explored try keeps its ticket: the explain header says so)
        return Ticket(ep, decision, shadow, pending, explored)

    def completed(self, ticket: Ticket | Decision, rtt_s: float, ok: bool, status: int) -> None:
        """A try ended (``ok``: an answer came back) after ``rtt_s`` with ``status``."""
        # failed tries are not evidence (``PredictedPolicy.observe``): a refused connection's RTT
        # says nothing about service time
        if ticket.__class__ is Decision:
            if ok:  # ``Feedback.add``, inline: one Python frame less on every request
                feedback = self.predicted.feedback  # type: ignore[union-attr]
                items = feedback.items
                items += (ticket.predicted_s, ticket.endpoint, rtt_s)  # type: ignore[union-attr, operator]
                if len(items) >= feedback.full:
                    feedback.flush()
            return
        assert isinstance(ticket, Ticket)
        ep = ticket.backend
        decision = ticket.decision
        if decision is not None and ok and self.predicted is not None:
            self.predicted.feedback.add(decision, rtt_s)
        shadow = ticket.shadow
        if shadow is not None and self.shadow is not None:
            self.shadow.shadow.observe(shadow.prediction_for(ep), rtt_s, ok)
            would = shadow.endpoint
            if would is not None:
                self.shadow_total += 1
                self.shadow_agreed += would is ep
                self.shadow_choices[would.id] = self.shadow_choices.get(would.id, 0) + 1
        if ticket.pending is not None and self.recorder is not None:
            self.recorder.complete(ticket.pending, rtt_s, status)

    @staticmethod
    def decision_of(ticket: Ticket | Decision | None) -> Decision | None:
        """The live policy's decision for the try ``ticket`` stands for, if it made one."""
        if ticket is None or ticket.__class__ is Decision:
            return ticket  # type: ignore[return-value]
        return ticket.decision  # type: ignore[union-attr]

    def scale(self) -> float:
        """The live policy's calibrated level (``PredictedPolicy.calibration``): a ``Decision`` holds
        the model's own predictions, and every absolute use multiplies them by this."""
        return self.predicted.calibration.scale if self.predicted is not None else 1.0

    def explain(self, ticket: Ticket | Decision | None) -> bytes:
        """The ``x-presage-decision`` value: chosen backend, its prediction, runner-up, reason."""
        if ticket is None:
            return b"policy=" + self.policy_name.encode()
        if ticket.__class__ is Ticket and ticket.explored:  # type: ignore[union-attr]
            return b"reason=explore"
        d = self.decision_of(ticket)
        if d is None:
            return b"policy=" + self.policy_name.encode()
        parts = [f"reason={'fallback:' + d.fallback if d.fallback else 'model'}"]
        scale = self.scale()
        if d.predicted_s == d.predicted_s:
            parts.append(f"predicted_ms={d.predicted_s * scale * 1e3:.3f}")
        if d.runner_up is not None:
            parts.append(f"runner_up={d.runner_up.id}")
            if d.runner_up_s == d.runner_up_s:
                parts.append(f"runner_up_ms={d.runner_up_s * scale * 1e3:.3f}")
        return "; ".join(parts).encode()

    # -- 1 Hz -------------------------------------------------------------------------------------
    def sync(self) -> None:
        m = self.metrics
        if self.predicted is not None:
            self.predicted.feedback.flush()
            acc = self.predicted.accuracy.accuracy()
            if acc is not None:
                m.live_accuracy.set(acc)
            m.calibration_scale.set(self.predicted.calibration.scale)
            for backend, value in self.predicted.feedback.latest.items():
                m.predicted_latency.labels(backend).set(value)
        if self.shadow is not None:
            acc = self.shadow.shadow.accuracy.accuracy()
            if acc is not None:
                m.shadow_live_accuracy.set(acc)
            for backend, n in self.shadow_choices.items():
                m.shadow_choices.labels(backend).inc(n)
            self.shadow_choices.clear()

    def describe(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"policy": self.policy_name}
        if self.predicted is not None:
            out["predicted"] = self.predicted.describe(now)
        if self.shadow is not None:
            out["shadow"] = self.shadow.shadow.describe(now) | {
                "agreement": self.shadow_agreed / self.shadow_total if self.shadow_total else None,
                "decisions": self.shadow_total,
            }
        if self.explore is not None:
            out["explore"] = self.explore.eps
        if self.recorder is not None:
            out["recorder"] = {"recorded": self.recorder.recorded, "dropped": self.recorder.dropped}
        return out

    # -- internals --------------------------------------------------------------------------------
    def _pending(
        self,
        ep: Endpoint,
        candidates: Sequence[Endpoint],
        info: RequestInfo,
        request_id: str,
        now: float,
        explored: bool,
    ) -> PendingSample:
        snap = self.features.snapshot if self.features is not None else None
        wall = self.wall_clock()
        rows = self._rows(snap)
        local = []
        for c in candidates:
            row = rows.get(c.id)
            age = wall - float(snap.sample_ts[row]) if row is not None and snap is not None else math.nan
            local.append(local_signals(c.in_flight, c.ewma_cost(now), age if age == age else -1.0))
        return PendingSample(
            ts=wall,
            id=request_id,
            method=info.method,
            req_bytes=info.body_bytes,
            req_class=info.req_class,
            policy=self.policy_name,
            explore=explored,
            chosen=ep.id,
            snap=snap,
            backends=tuple(c.id for c in candidates),
            local=tuple(local),
        )

    def _rows(self, snap: Any) -> dict[str, int]:
        if snap is None:
            return {}
        seen, rows = self._rows_of
        if seen is not snap:
            rows = {bid: i for i, bid in enumerate(snap.backend_ids)}
            self._rows_of = (snap, rows)
        return rows
