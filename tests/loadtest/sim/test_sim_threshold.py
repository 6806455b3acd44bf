"""The committed headline result: where it comes from, that its figures hang together, and that the
proxy's default live-accuracy floor is the one it implies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from loadtest.sim import threshold
from loadtest.sim.headline import (
    COMMAND,
    LIVE_WINDOW,
    RESULTS,
    calibrated_live,
    proxy_calibrated_min_accuracy,
    proxy_min_accuracy,
)
from loadtest.sim.sensitivity import AXES
from proxy.predict import min_accuracy


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return json.loads(RESULTS.read_text())


def test_it_comes_from_the_documented_default_run(doc: dict[str, Any]) -> None:
    assert doc["command"] == COMMAND
    assert doc["scenario"] == json.loads(json.dumps(threshold.DEFAULT_SCENARIO.as_dict()))
    assert doc["replicas"] == 3


def test_exported_figures_are_the_files(doc: dict[str, Any]) -> None:
    assert doc["break_even_accuracy"] == threshold.BREAK_EVEN_ACCURACY
    assert doc["break_even_live_accuracy"] == threshold.BREAK_EVEN_LIVE_ACCURACY
    assert doc["fallback_break_even_live_accuracy"] == threshold.FALLBACK_BREAK_EVEN_LIVE_ACCURACY
    assert 0.0 < threshold.BREAK_EVEN_LIVE_ACCURACY < threshold.BREAK_EVEN_ACCURACY < 1.0
    # Prequal is the harder bar: beating peak_ewma alone needs less accuracy.
    assert threshold.FALLBACK_BREAK_EVEN_ACCURACY <= threshold.BREAK_EVEN_ACCURACY


def test_proxy_default_floor_is_the_simulated_break_even_plus_margin(doc: dict[str, Any]) -> None:
    """min_accuracy.py and threshold.json must not drift apart: regenerate one, then fix the other."""
    recomputed = proxy_min_accuracy(
        doc["fallback_break_even_live_accuracy"], doc["fallback_live_ape_std"], doc["live_window"]
    )
    assert min_accuracy.DEFAULT_MIN_ACCURACY == doc["proxy_default_min_accuracy"] == recomputed
    assert doc["live_window"] == LIVE_WINDOW  # LiveAccuracy's default window, read from its signature
    assert doc["fallback_break_even_live_accuracy"] < min_accuracy.DEFAULT_MIN_ACCURACY
    # A perfect model must never trip the safeguard in the world the floor comes from.
    perfect = next(s for s in doc["predicted"] if s["accuracy"] == 1.0)
    assert perfect["live_accuracy"] > min_accuracy.DEFAULT_MIN_ACCURACY


def test_the_floor_for_calibrated_bundles_is_the_same_break_even_in_calibrated_units(
    doc: dict[str, Any],
) -> None:
    recomputed = proxy_calibrated_min_accuracy(doc["fallback_break_even_live_accuracy"], doc["live_window"])
    assert recomputed == min_accuracy.CALIBRATED_MIN_ACCURACY
    assert min_accuracy.floor_for(False) == min_accuracy.DEFAULT_MIN_ACCURACY
    assert min_accuracy.floor_for(True) == min_accuracy.CALIBRATED_MIN_ACCURACY


def test_the_calibrated_conversion_matches_scaling_log_normal_predictions() -> None:
    import numpy as np

    from loadtest.sim.noise import sigma_for_accuracy

    rng = np.random.default_rng(1)
    s = sigma_for_accuracy(0.45)
    ratio = np.exp(s * rng.standard_normal(400_000))  # predicted / observed, median-unbiased
    assert 1 - np.mean(np.abs(ratio - 1)) == pytest.approx(0.45, abs=0.005)
    ape = np.abs(np.exp(-s * s) * ratio - 1)  # the MAPE-optimal scale exp(-s^2)
    live, std = calibrated_live(0.45)
    assert 1 - ape.mean() == pytest.approx(live, abs=0.005) and ape.std() == pytest.approx(std, abs=0.005)
    assert live > 0.45


@pytest.mark.parametrize("key", ["mean_s", "mean_s:peak_ewma"])
def test_the_break_even_separates_losing_from_winning_runs(doc: dict[str, Any], key: str) -> None:
    th = doc["thresholds"][key]
    evaluated = {round(a, 6): v for a, v in th["evaluated"]}
    at = evaluated[round(th["accuracy"], 6)]
    below = evaluated[round(th["accuracy"] - th["resolution"], 6)]
    assert at < th["best_value"] <= below
    if key == "mean_s":
        assert th["accuracy"] == pytest.approx(doc["break_even_accuracy"], abs=1e-4)
        best = min(b["mean_s"] for b in doc["baselines"] if b["policy"] != "oracle")
        assert th["best_value"] == best
    else:
        assert th["accuracy"] == pytest.approx(doc["fallback_break_even_accuracy"], abs=1e-4)


def test_sensitivity_covers_every_axis(doc: dict[str, Any]) -> None:
    seen = {(p["axis"], p["value"]) for p in doc["sensitivity"]}
    assert seen == {(axis, v) for axis, (_, values) in AXES.items() for v in values}
