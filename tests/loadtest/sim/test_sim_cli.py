"""``presage simulate`` end to end on tiny scenarios: files, precedence, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest.sim.cli import main

TINY = ["--backends", "6", "--requests", "4000", "--quiet"]


def run(tmp_path: Path, *args: str) -> tuple[int, Path]:
    out = tmp_path / "out"
    return main([*TINY, "--out", str(out), *args]), out


def test_compare_writes_json_png_and_prints_a_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(tmp_path, "--policies", "least_request,predicted,oracle", "--accuracy", "0.8")
    assert code == 0
    data = json.loads((out / "compare.json").read_text())
    assert [r["policy"] for r in data["runs"]] == ["least_request", "predicted", "oracle"]
    assert data["runs"][1]["accuracy"] == 0.8
    assert (out / "compare.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "| predicted@0.800 |" in printed
    assert (out / "summary.md").read_text().strip() == printed.strip()


def test_flag_beats_env_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "scenario.yaml"
    config.write_text("servers: 3\nproxies: 2\nheterogeneity: 2.0\n")
    monkeypatch.setenv("PRESAGE_SERVERS", "5")
    monkeypatch.setenv("PRESAGE_PROXIES", "4")
    code, out = run(tmp_path, "-c", str(config), "--proxies", "3", "--policies", "random")
    assert code == 0
    scenario = json.loads((out / "compare.json").read_text())["scenario"]
    assert (scenario["servers"], scenario["proxies"], scenario["heterogeneity"]) == (5, 3, 2.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--load", "-1"], "load: invalid value"),
        (["--policies", "nope"], "policy: unknown 'nope'"),
        (["--trace", "/nonexistent/trace.csv"], "trace.csv"),
    ],
)
def test_bad_input_is_named_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _ = run(tmp_path, *args)
    assert code == 2
    assert message in capsys.readouterr().err


def test_unknown_config_key_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "scenario.yaml"
    config.write_text("backend: 3\n")
    code, _ = run(tmp_path, "-c", str(config))
    assert code == 2
    assert "backend: unknown scenario key" in capsys.readouterr().err


def test_sweep_finds_a_threshold_and_writes_the_headline(tmp_path: Path) -> None:
    target = tmp_path / "threshold.json"
    args = ("--backends", "12", "--requests", "8000", "--sweep", "--axes", "proxies", "--steps", "2")
    code, out = run(tmp_path, *args, "--write-threshold", str(target))
    assert code == 0
    doc = json.loads(target.read_text())
    assert doc["command"].startswith("presage simulate --backends 6 --requests 4000 --quiet")
    assert doc["scenario"]["backends"] == 12  # the later flag wins
    assert 0.5 < doc["break_even_accuracy"] < 1.0
    assert doc["fallback_break_even_accuracy"] <= doc["break_even_accuracy"]
    # Observed RTTs carry service noise no predictor sees: the live figure is the lower one.
    assert doc["break_even_live_accuracy"] < doc["break_even_accuracy"]
    assert doc["fallback_break_even_live_accuracy"] < doc["proxy_default_min_accuracy"] < 1.0
    assert [p["value"] for p in doc["sensitivity"]] == [1.0, 2.0, 4.0, 8.0]
    assert len(doc["predicted"]) == 11
    for name in ("sweep.json", "sweep_rtt.png", "sweep_waste_accuracy.png", "threshold_sensitivity.png"):
        assert (out / name).stat().st_size > 0


def test_scale_reports_every_point(tmp_path: Path) -> None:
    code, out = run(
        tmp_path,
        "--scale",
        "--scale-backends",
        "2,5",
        "--scale-requests",
        "2000",
        "--scale-policies",
        "random",
    )
    assert code == 0
    points = json.loads((out / "scale.json").read_text())["points"]
    assert [(p["backends"], p["requests"]) for p in points] == [(2, 2000), (5, 2000)]
    assert all(p["total_s"] > 0 and p["cpu_s"] > 0 for p in points)


def test_no_break_even_means_no_headline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "threshold.json"
    code, out = run(
        tmp_path, "--sweep", "--axes", "none", "--view", "stale", "--write-threshold", str(target)
    )
    assert code == 2
    assert "never beats" in capsys.readouterr().err
    assert not target.exists()
    assert (out / "sweep.json").exists()
