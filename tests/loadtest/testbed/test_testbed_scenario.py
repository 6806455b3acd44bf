"""Scenario files: the built-ins load, and every mistake is reported with its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.testbed.scenario import (
    BackendSpec,
    Episode,
    ScenarioError,
    SizeMix,
    builtin_scenarios,
    load_scenario,
)

GOOD = """\
name: t
duration_s: 20
slo_p95_s: 0.1
seed: 3
trace: {kind: step, low_rps: 10, high_rps: 30}
sizes: {128: 3, 256: 1}
backends:
  - {id: a, workers: 2, cpu_quota_cores: 0.5}
  - {id: b}
episodes:
  - {backend: a, start_s: 5, duration_s: 10, kind: cache, workers: 2}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_builtin_scenarios_load_with_heterogeneous_backends_and_moving_interference() -> None:
    assert {"quick", "full"} <= set(builtin_scenarios())
    quick, full = load_scenario("quick"), load_scenario("full")
    assert quick.duration_s <= 60 and full.duration_s > quick.duration_s
    for sc in (quick, full):
        quotas = [b.cpu_quota_cores or 0.0 for b in sc.backends]
        assert len(set(quotas)) >= 3 and max(quotas) >= 3 * min(quotas)  # heterogeneous
        # the quotas leave the proxy, the load generator and the agents room on 2 cores
        assert sum(quotas) <= 1.5 and sc.cpu_period_ms == 10
        assert len({e.backend for e in sc.episodes}) >= 2  # interference moves between backends
        assert all(e.end_s <= sc.duration_s for e in sc.episodes)
    assert len(full.episodes) > len(quick.episodes)
    assert {e.kind for e in full.episodes} == {"cpu", "cache", "memory", "io"}
    over = load_scenario("overcommit")  # the first full scenario, kept for comparison
    assert sum(b.cpu_quota_cores or 0.0 for b in over.backends) > 2 and over.cpu_period_ms == 100


def test_a_file_becomes_frozen_dataclasses_with_defaults(tmp_path: Path) -> None:
    sc = load_scenario(write(tmp_path, GOOD))
    assert sc.backends == (BackendSpec("a", 2, 0.5, 1.0, 0.0), BackendSpec("b", 2, None, 1.0, 0.0))
    assert sc.episodes == (Episode("a", 5, 10, "cache", 2),)
    assert sc.sizes == SizeMix(((128, 3), (256, 1)))
    assert sc.sizes.shares() == {128: 0.75, 256: 0.25}
    assert (sc.trace.kind, sc.trace.period_s, sc.seed) == ("step", 10.0, 3)
    assert sc.cpu_period_ms == 100.0  # the kernel's default period unless the scenario says otherwise
    assert sc.work == "imaging"  # the FFT work unless the scenario names another kind
    with pytest.raises(AttributeError):
        sc.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("seed: 3", "seed: 3\ncolour: red", "colour: unknown key"),
        ("slo_p95_s: 0.1\n", "", "scenario.slo_p95_s: missing"),
        ("cpu_quota_cores: 0.5", "cpu_quota_cores: -1", r"backends\[0\].cpu_quota_cores: must be >= 0.01"),
        ("cpu_quota_cores: 0.5", "cpu_quota_cores: lots", r"backends\[0\].cpu_quota_cores: expected a num"),
        ("workers: 2, cpu", "workers: 0, cpu", r"backends\[0\].workers: must be in 1..64"),
        ("{id: b}", "{id: a}", r"backends\[1\].id: duplicate id 'a'"),
        ("{id: b}", "{id: 'b c'}", r"backends\[1\].id: must be"),
        ("{id: b}", "{workers: 1}", r"backends\[1\].id: missing"),
        ("{id: b}", "{id: b, wokers: 1}", r"backends\[1\].wokers: unknown key"),
        ("backend: a,", "backend: z,", r"episodes\[0\].backend: unknown backend 'z'"),
        ("kind: cache", "kind: gpu", r"episodes\[0\].kind: must be one of cpu, cache, memory, io"),
        ("duration_s: 10, kind", "duration_s: 99, kind", r"episodes\[0\].duration_s: must be > 0 and <= 20"),
        ("high_rps: 30", "high_rps: 5", "trace.high_rps: must be >= low_rps"),
        ("kind: step", "kind: wave", "trace.kind: must be one of constant, step, dynamic"),
        ("{128: 3, 256: 1}", "{128: 3, 5000: 1}", r"sizes\[1\].size: must be in 16..1024"),
        ("{128: 3, 256: 1}", "{128: 0}", r"sizes\[0\].weight: must be > 0"),
        ("{128: 3, 256: 1}", "[[128, 1], [128]]", r"sizes\[1\]: must be a pair"),
        ("{128: 3, 256: 1}", "{}", "sizes: must list at least one size"),
        ("duration_s: 20", "duration_s: 0", "duration_s: must be > 0"),
        ("seed: 3", "seed: 3\ncpu_period_ms: 0.5", "cpu_period_ms: must be >= 1"),
        ("seed: 3", "seed: 3\nwork: mining", "work: must be one of imaging, checksum"),
        (
            "backends:\n  - {id: a, workers: 2, cpu_quota_cores: 0.5}\n  - {id: b}\n",
            "backends: []\n",
            "backends: must list 1..16 backends",
        ),
    ],
)
def test_every_error_names_its_key(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(ScenarioError, match=message):
        load_scenario(write(tmp_path, GOOD.replace(old, new, 1)))


def test_unreadable_or_unknown_scenarios_are_named(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no built-in scenario 'nope'"):
        load_scenario("nope")
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(write(tmp_path, "name: [unclosed"))
    with pytest.raises(ScenarioError, match="scenario: must be a mapping"):
        load_scenario(write(tmp_path, "- just a list"))


def test_the_checksum_scenarios_change_only_the_work_of_their_imaging_twins() -> None:
    import dataclasses

    for name, twin in (("checksum-quiet", "interference-core-quiet"), ("checksum", "interference")):
        sc, base = load_scenario(name), load_scenario(twin)
        assert sc.work == "checksum" and base.work == "imaging"
        assert dataclasses.replace(sc, name=base.name, work=base.work) == base
