"""The initial RTT guess must hold until the endpoint is first stamped, whatever the clock reads."""

from __future__ import annotations

import pytest

from proxy.balancer.endpoint import DEFAULT_RTT_S, Endpoint


@pytest.mark.parametrize("now", [0.5, 12_345.0, 9.9e6])
def test_initial_guess_does_not_decay_before_the_first_stamp(now: float) -> None:
    ep = Endpoint("a", "http://127.0.0.1:1")
    assert ep.ewma_cost(now) == DEFAULT_RTT_S


def test_first_answer_replaces_the_guess_then_decays() -> None:
    ep = Endpoint("a", "http://127.0.0.1:1", decay_s=10.0)
    ep.observe(0.002, 5_000.0, True)
    assert ep.ewma_cost(5_000.0) == pytest.approx(0.002)
    assert ep.ewma_cost(5_010.0) == pytest.approx(0.002 * 0.36787944, rel=1e-6)
