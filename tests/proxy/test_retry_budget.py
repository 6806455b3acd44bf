"""Finagle-style retry budget: a percentage of recent requests plus a fixed reserve."""

from __future__ import annotations

import pytest

from proxy.retry_budget import RetryBudget, RetrySettings


def drain(budget: RetryBudget, now: float, limit: int = 10_000) -> int:
    granted = 0
    while granted < limit and budget.try_withdraw(now):
        granted += 1
    return granted


def test_the_reserve_allows_min_retries_per_s_times_ttl() -> None:
    budget = RetryBudget(RetrySettings(min_retries_per_s=10.0, ttl_s=10.0))
    assert drain(budget, 0.0) == 100
    assert budget.retries == 100 and budget.rejected == 1


def test_deposits_buy_budget_percent_of_requests() -> None:
    budget = RetryBudget(RetrySettings(budget_percent=20.0, min_retries_per_s=0.0, ttl_s=10.0))
    for _ in range(50):
        budget.deposit(0.0)
    assert drain(budget, 0.0) == 10  # 20 % of 50


def test_both_add_up() -> None:
    budget = RetryBudget(RetrySettings(budget_percent=50.0, min_retries_per_s=1.0, ttl_s=5.0))
    for _ in range(100):
        budget.deposit(0.0)
    assert drain(budget, 0.0) == 5 + 50


def test_deposits_and_withdrawals_expire_after_ttl() -> None:
    budget = RetryBudget(RetrySettings(budget_percent=20.0, min_retries_per_s=0.0, ttl_s=10.0))
    for _ in range(50):
        budget.deposit(0.0)
    assert drain(budget, 9.9) == 10  # still inside the window
    assert drain(budget, 9.95) == 0
    for _ in range(50):
        budget.deposit(10.5)  # the first deposits have gone; the withdrawals at 9.9 still count
    assert drain(budget, 10.5) == 0
    assert drain(budget, 19.9) == 10  # the withdrawals at 9.9 have gone, the deposits at 10.5 not yet
    assert budget.balance(30.0) == 0  # and a ttl later everything has expired


def test_a_long_idle_gap_clears_the_window() -> None:
    budget = RetryBudget(RetrySettings(min_retries_per_s=1.0, ttl_s=2.0))
    assert drain(budget, 1000.0) == 2
    assert drain(budget, 1000.5) == 0
    assert drain(budget, 5000.0) == 2
    assert budget.balance(5000.0) < budget.withdraw_tokens


def test_zero_percent_leaves_only_the_reserve() -> None:
    budget = RetryBudget(RetrySettings(budget_percent=0.0, min_retries_per_s=0.5, ttl_s=4.0))
    for _ in range(1000):
        budget.deposit(0.0)
    assert drain(budget, 0.0) == 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"attempts": 0}, "attempts"),
        ({"budget_percent": -1.0}, "budget_percent"),
        ({"min_retries_per_s": -1.0}, "min_retries_per_s"),
        ({"ttl_s": 0.5}, "ttl_s"),
        ({"ttl_s": 61.0}, "ttl_s"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        RetrySettings(**kwargs)  # type: ignore[arg-type]
