"""The committed headline result: where it comes from and that its figures hang together."""

from __future__ import annotations

import json
from typing import Any

import pytest

from loadtest.sim import threshold
from loadtest.sim.headline import COMMAND, RESULTS
from loadtest.sim.sensitivity import AXES


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return json.loads(RESULTS.read_text())


def test_it_comes_from_the_documented_default_run(doc: dict[str, Any]) -> None:
    assert doc["command"] == COMMAND
    assert doc["scenario"] == json.loads(json.dumps(threshold.DEFAULT_SCENARIO.as_dict()))
    assert doc["replicas"] == 3


def test_exported_figures_are_the_files(doc: dict[str, Any]) -> None:
    assert doc["break_even_accuracy"] == threshold.BREAK_EVEN_ACCURACY
    assert doc["default_min_accuracy"] == threshold.DEFAULT_MIN_ACCURACY
    assert doc["fallback_min_accuracy"] == threshold.FALLBACK_MIN_ACCURACY
    assert 0.0 < threshold.DEFAULT_MIN_ACCURACY < threshold.BREAK_EVEN_ACCURACY < 1.0
    assert threshold.FALLBACK_BREAK_EVEN_ACCURACY <= threshold.BREAK_EVEN_ACCURACY


def test_the_break_even_separates_losing_from_winning_runs(doc: dict[str, Any]) -> None:
    th = doc["thresholds"]["mean_s"]
    assert th["accuracy"] == pytest.approx(doc["break_even_accuracy"], abs=1e-4)
    evaluated = {round(a, 6): v for a, v in th["evaluated"]}
    at = evaluated[round(th["accuracy"], 6)]
    below = evaluated[round(th["accuracy"] - th["resolution"], 6)]
    assert at < th["best_value"] <= below
    best = min(b["mean_s"] for b in doc["baselines"] if b["policy"] != "oracle")
    assert th["best_value"] == best


def test_sensitivity_covers_every_axis(doc: dict[str, Any]) -> None:
    seen = {(p["axis"], p["value"]) for p in doc["sensitivity"]}
    assert seen == {(axis, v) for axis, (_, values) in AXES.items() for v in values}
