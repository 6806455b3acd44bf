import random

import pytest

from proxy.predict.decision_budget import MEDIAN_BATCH, DecisionBudget


def test_budget_follows_the_median_rtt() -> None:
    budget = DecisionBudget(budget_frac=0.01, min_budget_s=1e-6, initial_rtt_s=0.001)
    rng = random.Random(7)
    for _ in range(20_000):
        budget.observe_rtt(rng.uniform(0.040, 0.060))  # median 50 ms
    assert budget.median_rtt_s == pytest.approx(0.050, rel=0.1)
    assert budget.budget_s == pytest.approx(0.0005, rel=0.1)


def test_budget_never_below_its_floor() -> None:
    budget = DecisionBudget(budget_frac=0.01, min_budget_s=50e-6, initial_rtt_s=0.0001)
    assert budget.budget_s == 50e-6


def test_breaker_opens_on_slow_decisions_and_closes_after_cooldown() -> None:
    budget = DecisionBudget(
        budget_frac=0.01, min_budget_s=1e-6, initial_rtt_s=0.01, window=50, max_slow_share=0.1, cooldown_s=5.0
    )
    now = 100.0
    for _ in range(50):
        assert budget.record(10e-6, now) is False  # 10 us against a 100 us budget
    assert not budget.is_open(now)
    for _ in range(6):  # 6 of 56 > 10 %
        budget.record(1e-3, now)
    assert budget.is_open(now)
    assert budget.is_open(now + 4.9)
    assert not budget.is_open(now + 5.0)


def test_occasional_slow_decisions_do_not_open_it() -> None:
    budget = DecisionBudget(budget_frac=0.01, min_budget_s=1e-6, initial_rtt_s=0.01, window=100)
    for i in range(1000):
        budget.record(1e-3 if i % 20 == 0 else 1e-5, float(i))  # 5 % slow
    assert not budget.is_open(1000.0)


def test_budget_above_ten_percent_is_refused() -> None:
    with pytest.raises(ValueError, match="10%"):
        DecisionBudget(budget_frac=0.2)


@pytest.mark.parametrize(("window", "share", "slow_p"), [(50, 0.1, 0.08), (200, 0.1, 0.11), (37, 0.25, 0.3)])
def test_breaker_opens_exactly_when_a_sliding_window_would(window: int, share: float, slow_p: float) -> None:
    """The breaker keeps only the last slow decisions' indices; it must open at the very decision
    where a plain sliding window of ``window`` booleans first holds more than ``share`` slow ones."""
    from collections import deque

    budget = DecisionBudget(
        budget_frac=0.01,
        min_budget_s=1e-6,
        initial_rtt_s=0.01,
        window=window,
        max_slow_share=share,
        cooldown_s=1.0,
    )
    recent: deque[bool] = deque(maxlen=window)
    rng = random.Random(window)
    opened = 0
    for i in range(20_000):
        now = float(i)  # one decision a second: a cooldown of 1 s has passed by the next one
        slow = rng.random() < slow_p
        budget.record(1e-3 if slow else 1e-5, now)
        recent.append(slow)
        expect = len(recent) == window and sum(recent) > share * window
        assert budget.is_open(now) == expect, i
        if expect:
            recent.clear()
            opened += 1
    assert opened > 0


def test_a_large_batch_sets_the_median_to_its_own_and_a_small_one_steps() -> None:
    rng = random.Random(3)
    big = [rng.uniform(0.010, 0.030) for _ in range(MEDIAN_BATCH * 4)] + [0.0, -1.0]  # unusable: ignored
    budget = DecisionBudget(budget_frac=0.01, min_budget_s=1e-6, initial_rtt_s=0.001)
    budget.observe_rtts(big)
    assert budget.median_rtt_s == pytest.approx(sorted(big[: MEDIAN_BATCH * 4])[MEDIAN_BATCH * 2], rel=0.01)
    assert budget.budget_s == pytest.approx(0.01 * budget.median_rtt_s)
    small = [rng.uniform(0.040, 0.060) for _ in range(MEDIAN_BATCH - 1)]
    stepped = DecisionBudget(budget_frac=0.01, min_budget_s=1e-6, initial_rtt_s=0.001)
    stepped.observe_rtts(big)
    for rtt in small:
        stepped.observe_rtt(rtt)
    budget.observe_rtts(small)
    assert budget.median_rtt_s == stepped.median_rtt_s and budget.budget_s == stepped.budget_s
