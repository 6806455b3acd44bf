"""Calibration from a recorded samples file with a known world behind it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loadtest.sim.calibrate import CalibrationError, calibrate
from loadtest.sim.engine import prepare, simulate
from loadtest.sim.scenario import Scenario
from predictor_runtime.samples import Candidate, Sample, dumps, header_record, sample_record

SPEED = {"b0": 1.0, "b1": 2.0, "b2": 0.5}
CLASS_MEAN = {64.0: 0.002, 256.0: 0.008}
FEATURES = ("app_queue_length", "host_psi_cpu_some_avg10")


def in_episode(backend: str, ts: float) -> bool:
    """Deterministic episodes: 5 s on every 20 s, staggered per backend."""
    return (ts + 7.0 * int(backend[1])) % 20.0 < 5.0


def write_samples(path: Path, n: int, with_psi: bool = True, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    names = FEATURES if with_psi else FEATURES[:1]
    lines = [dumps(header_record(names))]
    for i in range(n):
        ts = 0.05 * i
        chosen = f"b{rng.integers(3)}"
        cls = 64.0 if rng.random() < 0.7 else 256.0
        loaded = rng.random() < 0.3
        slow = 2.5 if in_episode(chosen, ts) else 1.0
        rtt = CLASS_MEAN[cls] * rng.lognormal(-0.045, 0.3) * slow / SPEED[chosen]
        rtt += 0.01 * rng.random() if loaded else 0.0
        cands = tuple(
            Candidate(
                backend=b,
                x=(2.0 if (loaded and b == chosen) else 0.0, 40.0 if in_episode(b, ts) else 1.0)[
                    : len(names)
                ],
                local=(1.0 if (loaded and b == chosen) else 0.0, 0.01, 0.5),
            )
            for b in SPEED
        )
        sample = Sample(ts, f"r{i}", "GET", 0, cls, "random", True, chosen, rtt, 200, cands, names, ())
        lines.append(dumps(sample_record(sample)))
    path.write_bytes(b"".join(lines))


def test_recovers_classes_slowdown_and_episodes(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    write_samples(path, 8000)
    cal = calibrate(path)
    assert cal.class_values == (64.0, 256.0)
    assert cal.classes[0] == pytest.approx((1.0, 0.7), abs=0.03)
    assert cal.classes[1][0] == pytest.approx(4.0, rel=0.1)
    assert cal.service_mean_s == pytest.approx(0.002, rel=0.15)
    assert cal.slowdown == pytest.approx(2.5, rel=0.1)
    assert cal.interference_on_s == pytest.approx(5.0, rel=0.1)
    assert cal.interference_off_s == pytest.approx(15.0, rel=0.1)
    assert cal.observed_heterogeneity == pytest.approx(4.0, rel=0.15)
    for table in cal.quantiles:
        assert np.mean((np.array(table[1:]) + table[:-1]) / 2.0) == pytest.approx(1.0)


def test_calibrated_scenario_runs_with_empirical_service(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    write_samples(path, 3000)
    scenario = calibrate(path).apply(Scenario(backends=4, requests=5000))
    assert scenario.service_dist == "empirical"
    setup = prepare(scenario)
    factors = np.asarray(scenario.class_factors)[setup.workload.cls]
    units = setup.workload.base_s / (scenario.service_mean_s * factors)
    assert units.mean() == pytest.approx(1.0, rel=0.05)
    assert simulate(setup, "least_request").rtt.mean() > 0.0


def test_without_psi_interference_keeps_the_scenario_values(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    write_samples(path, 500, with_psi=False)
    cal = calibrate(path)
    assert cal.slowdown is None and cal.interference_on_s is None
    assert any("PSI" in note for note in cal.notes)
    assert cal.apply(Scenario()).slowdown == Scenario().slowdown


def test_too_few_samples_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    write_samples(path, 5)
    with pytest.raises(CalibrationError, match="5 usable samples"):
        calibrate(path)
