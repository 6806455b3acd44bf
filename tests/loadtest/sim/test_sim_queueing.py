"""The engine against queueing theory: M/M/1 and M/M/c (Erlang C) mean sojourn times."""

from __future__ import annotations

import math

import pytest

from loadtest.sim.engine import prepare, simulate
from loadtest.sim.scenario import Scenario


def single_queue(servers: int, load: float, requests: int = 200_000, seed: int = 3) -> Scenario:
    """One backend, one class, exponential service of mean 1 s, no interference: M/M/c."""
    return Scenario(
        backends=1,
        servers=servers,
        load=load,
        requests=requests,
        classes=((1.0, 1.0),),
        service_mean_s=1.0,
        service_dist="exponential",
        interference_on_s=0.0,
        slowdown=1.0,
        proxies=1,
        seed=seed,
    )


def mean_sojourn(scenario: Scenario) -> float:
    result = simulate(prepare(scenario), "random")
    warm = int(scenario.warmup * scenario.requests)
    return float(result.rtt[warm:].mean())


def erlang_c_sojourn(servers: int, lam: float, mu: float) -> float:
    """``W = C(c, a) / (c mu - lambda) + 1 / mu`` with ``a = lambda / mu`` (Erlang C)."""
    a = lam / mu
    head = sum(a**k / math.factorial(k) for k in range(servers))
    tail = a**servers / math.factorial(servers) * servers / (servers - a)
    return tail / (head + tail) / (servers * mu - lam) + 1.0 / mu


@pytest.mark.parametrize("load", [0.5, 0.7])
def test_mm1_mean_sojourn_is_one_over_mu_minus_lambda(load: float) -> None:
    expected = 1.0 / (1.0 - load)  # mu = 1
    assert mean_sojourn(single_queue(1, load)) == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize(("servers", "load"), [(2, 0.7), (4, 0.8)])
def test_mmc_mean_sojourn_matches_erlang_c(servers: int, load: float) -> None:
    expected = erlang_c_sojourn(servers, lam=load * servers, mu=1.0)
    assert mean_sojourn(single_queue(servers, load)) == pytest.approx(expected, rel=0.05)


def test_erlang_c_formula_reduces_to_mm1() -> None:
    assert erlang_c_sojourn(1, 0.7, 1.0) == pytest.approx(1.0 / 0.3)
