"""Scenario validation, rate traces and the workload they produce."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loadtest.sim.engine import prepare
from loadtest.sim.scenario import Scenario, parse_classes
from loadtest.sim.trace import TraceError, load_trace
from loadtest.sim.workload import arrival_times


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"load": 0.0}, "load"),
        ({"backends": 0}, "backends"),
        ({"heterogeneity": 0.5}, "heterogeneity"),
        ({"view": "psychic"}, "view"),
        ({"choices": 1}, "choices"),
        ({"service_dist": "empirical"}, "service_quantiles"),
        ({"classes": ((1.0, 0.0),)}, "classes"),
    ],
)
def test_bad_values_name_their_key(changes: dict[str, object], key: str) -> None:
    with pytest.raises(ValueError, match=f"^{key}: invalid value"):
        Scenario().with_(**changes)


def test_mapping_rejects_unknown_keys_and_coerces_strings() -> None:
    with pytest.raises(ValueError, match=r"^lod: unknown scenario key"):
        Scenario.from_mapping({"lod": 0.5})
    s = Scenario.from_mapping({"load": "0.5", "backends": "12", "classes": "1:1,4:1"})
    assert (s.load, s.backends, s.classes) == (0.5, 12, ((1.0, 1.0), (4.0, 1.0)))
    with pytest.raises(ValueError, match=r"^servers: expected a number"):
        Scenario.from_mapping({"servers": "many"})


def test_parse_classes_names_a_bad_class() -> None:
    assert parse_classes("2") == ((2.0, 1.0),)
    with pytest.raises(ValueError, match="bad class 'x:1'"):
        parse_classes("1:1,x:1")


def test_load_sets_the_arrival_rate() -> None:
    s = Scenario(backends=4, heterogeneity=1.0, servers=2, interference_on_s=0.0, load=0.5, requests=1000)
    setup = prepare(s)
    # 4 backends x 2 workers at capacity 1, mean service 0.005 s * mean factor.
    assert setup.workload.rate == pytest.approx(0.5 * 8 / (0.005 * s.mean_factor))


def test_trace_file_round_trip_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "t.csv"
    good.write_text("t_s,scale\n0,1.0\n10,2.0  # burst\n20,1.0\n")
    assert load_trace(good) == ((0.0, 1.0), (10.0, 2.0), (20.0, 1.0))
    for text, match in [("0,1\n5\n", ":2: want"), ("5,1\n1,1\n", "backwards"), ("0,1\n5,0\n", "last scale")]:
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(TraceError, match=match):
            load_trace(bad)


def test_trace_driven_arrivals_follow_the_rate() -> None:
    trace = ((0.0, 1.0), (100.0, 3.0), (200.0, 0.0), (300.0, 1.0))
    t = arrival_times(np.random.default_rng(4), 200_000, 100.0, trace)
    counts = [np.sum((t >= a) & (t < a + 100.0)) for a in (0.0, 100.0, 200.0, 300.0)]
    assert counts[0] == pytest.approx(10_000, rel=0.05)
    assert counts[1] == pytest.approx(30_000, rel=0.05)
    assert counts[2] == 0
    assert counts[3] == pytest.approx(10_000, rel=0.05)
    assert (np.diff(t) >= 0).all()
