from __future__ import annotations

import pytest

from proxy.balancer import registry
from proxy.balancer.registry import POLICY_NAMES, make_policy


@pytest.mark.parametrize("name", ["round_robin", "random", "least_request", "peak_ewma"])
def test_each_heuristic_is_built_by_name(name: str) -> None:
    policy = make_policy(name)
    assert policy.name == name


def test_fresh_instance_per_call() -> None:
    assert make_policy("round_robin") is not make_policy("round_robin")


def test_predicted_is_in_the_table() -> None:
    assert POLICY_NAMES == ("round_robin", "random", "least_request", "peak_ewma", "predicted")


def test_unknown_name_is_named_with_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown policy 'peak_ewmaa' \(known: round_robin, random, .*predicted\)"
    ):
        make_policy("peak_ewmaa")


def test_a_policy_whose_module_fails_to_import_is_reported_and_others_still_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(registry.POLICIES, "broken", "proxy.balancer.no_such_module:BrokenPolicy")
    with pytest.raises(ValueError, match=r"'broken' is unavailable \(proxy\.balancer\.no_such_module"):
        make_policy("broken")
    assert make_policy("least_request").name == "least_request"


def test_bad_options_are_a_value_error_naming_the_policy() -> None:
    with pytest.raises(ValueError, match="'random' rejected its options"):
        make_policy("random", choices=3)
