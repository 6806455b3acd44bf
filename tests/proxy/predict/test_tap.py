"""The decision tap on a real ONNX model: what a try carries from dispatch to completion, and what
it leaves in the policy's feedback, the shadow's verdict and the explain header."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import pytest
from predict_fixtures import snapshot

from proxy.balancer.base import RequestInfo
from proxy.balancer.endpoint import Endpoint
from proxy.balancer.explore import ExplorePolicy
from proxy.balancer.peak_ewma import PeakEwmaPolicy
from proxy.balancer.predicted import Decision, PredictedPolicy, PredictedSettings
from proxy.balancer.round_robin import RoundRobinPolicy
from proxy.balancer.shadow import ShadowPolicy
from proxy.metrics import Metrics
from proxy.outlier import OutlierSettings
from proxy.pool import BackendPool
from proxy.predict.model_holder import ModelHolder
from proxy.predict.tap import DecisionTap, Ticket

REQ = RequestInfo("GET", 0, 1.0, True)
NOW = 1000.0


@dataclass
class Store:
    snapshot: Any


def predicted(holder: ModelHolder, queues: list[float]) -> PredictedPolicy:
    settings = PredictedSettings(choices=0, min_budget_s=0.01, accuracy_window=10, min_observations=2)
    return PredictedPolicy(
        holder=holder, features=Store(snapshot(queues)), fallback=PeakEwmaPolicy(), settings=settings
    )


def pool_of(policy: Any, n: int) -> BackendPool:
    eps = [Endpoint(f"b{i}", f"http://127.0.0.1:{9000 + i}") for i in range(n)]
    return BackendPool(eps, policy, outlier=OutlierSettings(), clock=lambda: NOW)


def one_try(tap: DecisionTap, pool: BackendPool, rtt_s: float, ok: bool = True) -> Any:
    ep = pool.choose(REQ, random.Random(0), NOW)
    assert ep is not None
    ticket = tap.dispatched(ep, pool, REQ, "req-1", NOW)
    tap.completed(ticket, rtt_s, ok, 200 if ok else 502) if ticket is not None else None
    return ticket


def test_a_plain_predicted_try_carries_the_policy_s_own_decision(holder: ModelHolder) -> None:
    policy = predicted(holder, [8, 1, 15, 4])
    pool = pool_of(policy, 4)
    tap = DecisionTap(policy_name="predicted", metrics=Metrics(), predicted=policy)
    ticket = one_try(tap, pool, 0.003)
    assert ticket is policy.last and ticket.__class__ is Decision  # nothing allocated per try
    assert tap.decision_of(ticket) is ticket and ticket.endpoint.id == "b1"
    assert policy.feedback.items[2::3] == [0.003]  # pending until the batch fills or a flush
    header = tap.explain(ticket).decode()
    assert header.startswith("reason=model; predicted_ms=") and "runner_up=b3" in header
    tap.sync()  # the 1 Hz sync applies the batch: accuracy, and the gauge's latest prediction
    assert policy.accuracy.count == 1 and policy.feedback.latest == {"b1": ticket.predicted_s}


def test_failed_tries_leave_no_evidence(holder: ModelHolder) -> None:
    policy = predicted(holder, [8, 1, 15, 4])
    tap = DecisionTap(policy_name="predicted", metrics=Metrics(), predicted=policy)
    one_try(tap, pool_of(policy, 4), 0.003, ok=False)
    policy.feedback.flush()
    assert policy.accuracy.total == 0 and policy.feedback.latest == {}


def test_a_decision_for_another_backend_is_not_this_try_s(holder: ModelHolder) -> None:
    policy = predicted(holder, [8, 1, 15, 4])
    pool = pool_of(policy, 4)
    tap = DecisionTap(policy_name="predicted", metrics=Metrics(), predicted=policy)
    pool.choose(REQ, random.Random(0), NOW)
    other = pool.endpoints[0]  # e.g. a hedge copy: not what the policy chose
    assert tap.dispatched(other, pool, REQ, "req-1", NOW) is None
    assert tap.explain(None) == b"policy=predicted"


def test_shadow_mode_carries_a_ticket_and_scores_the_live_choice(holder: ModelHolder) -> None:
    shadow = ShadowPolicy(RoundRobinPolicy(), predicted(holder, [8, 1, 15, 4]))
    pool = pool_of(shadow, 4)
    tap = DecisionTap(policy_name="round_robin", metrics=Metrics(), shadow=shadow)
    tickets = [one_try(tap, pool, 0.003) for _ in range(4)]
    assert all(t.__class__ is Ticket and t.decision is None for t in tickets)
    assert tap.decision_of(tickets[0]) is None
    assert tap.shadow_total == 4 and tap.shadow_agreed == 1  # round robin met b1 once in four
    assert shadow.shadow.accuracy.count == 4  # every live choice was scored by the shadow
    assert tap.explain(tickets[0]) == b"policy=round_robin"


def test_an_explored_try_is_explained_as_such(holder: ModelHolder) -> None:
    policy = predicted(holder, [8, 1, 15, 4])
    explore = ExplorePolicy(policy, 1.0)
    pool = pool_of(explore, 4)
    tap = DecisionTap(policy_name="predicted", metrics=Metrics(), predicted=policy, explore=explore)
    ticket = one_try(tap, pool, 0.003)
    assert ticket.__class__ is Ticket and ticket.explored and tap.decision_of(ticket) is None
    assert tap.explain(ticket) == b"reason=explore"
    policy.feedback.flush()
    assert policy.accuracy.total == 0  # an explored try was not the model's choice


def test_a_fallback_decision_feeds_the_rtt_median_but_not_accuracy() -> None:
    policy = predicted(ModelHolder(), [8, 1])  # no model: every decision falls back
    tap = DecisionTap(policy_name="predicted", metrics=Metrics(), predicted=policy)
    ticket = one_try(tap, pool_of(policy, 2), 0.004)
    assert ticket.fallback == "no_model" and math.isnan(ticket.predicted_s)
    assert tap.explain(ticket) == b"reason=fallback:no_model"
    before = policy.budget.median_rtt_s
    policy.feedback.flush()
    assert policy.accuracy.total == 0 and policy.budget.median_rtt_s != pytest.approx(before, rel=1e-12)


def test_the_explain_header_and_the_gauges_carry_the_live_level(holder: ModelHolder) -> None:
    """Backends that answer in three times the model's prediction: once the level is refitted, the
    header and the predicted-latency gauge say so (the decision keeps the model's own figures)."""
    settings = PredictedSettings(
        choices=0, min_budget_s=0.01, accuracy_window=10, min_observations=2, min_accuracy=0.0
    )  # the first tries' 200 % errors would trip the accuracy safeguard: off, to keep the model's choices
    policy = PredictedPolicy(
        holder=holder, features=Store(snapshot([8, 1, 15, 4])), fallback=PeakEwmaPolicy(), settings=settings
    )
    pool = pool_of(policy, 4)
    metrics = Metrics()
    tap = DecisionTap(policy_name="predicted", metrics=metrics, predicted=policy)
    first = one_try(tap, pool, 0.0)  # no usable RTT: no evidence, only the decision
    raw, runner_up = first.predicted_s, first.runner_up_s
    before = tap.explain(first).decode()
    assert f"predicted_ms={raw * 1e3:.3f}" in before and f"runner_up_ms={runner_up * 1e3:.3f}" in before
    for _ in range(3):
        one_try(tap, pool, 3 * raw)
    tap.sync()
    assert policy.calibration.scale == pytest.approx(3.0)
    later = one_try(tap, pool, 3 * raw)  # (another backend now: the first ones are still in flight)
    after = tap.explain(later).decode()
    assert f"predicted_ms={3 * later.predicted_s * 1e3:.3f}" in after
    assert f"runner_up_ms={3 * later.runner_up_s * 1e3:.3f}" in after
    tap.sync()
    assert policy.feedback.latest[later.endpoint.id] == pytest.approx(3 * later.predicted_s)
    text = metrics.render().decode()
    assert "presage_prediction_calibration_ratio 3.0" in text
