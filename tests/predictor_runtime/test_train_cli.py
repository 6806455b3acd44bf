"""``presage train`` end to end on synthetic samples, and every bad-input path (exit 2, DIR untouched)."""

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from loadtest.synth_samples import generate
from predictor_runtime import samples
from predictor_runtime.bundle import load_bundle
from predictor_runtime.train import pipeline, zoo
from predictor_runtime.train.cli import main
from proxy.cli import main as presage

Args = Callable[..., list[str]]


def _tree(path: Path) -> dict[str, str]:
    """Every file under ``path`` with its sha256: a directory's exact state."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_trained_bundle_metadata(trained: tuple[Path, pipeline.TrainResult]) -> None:
    out, result = trained
    bundle = load_bundle(out)
    assert bundle.batch_size == 3
    assert bundle.family in zoo.FAMILIES
    assert bundle.transform == "log"
    assert {"backend=b1", "backend=b2", "backend=b3", "req_class"} <= set(bundle.feature_names)
    assert len(bundle.feature_names) == len(result.ranking.kept) + 3
    assert set(bundle.metrics) >= {"accuracy", "mae_s", "p95_ape", "r2"}
    assert bundle.metrics["accuracy"] == pytest.approx(result.selected.test["accuracy"])
    assert 0.5 < bundle.metrics["accuracy"] <= 1.0  # synthetic data: a learnable signal, not a target
    assert 0 < bundle.inference["p50_s"] <= bundle.inference["p99_s"]
    split = bundle.meta["split"]
    assert (
        split["train"]["ts_last"]
        < split["val"]["ts_first"]
        <= split["val"]["ts_last"]
        < split["test"]["ts_first"]
    )
    assert bundle.training["samples_used"] == len(result.dataset)
    assert bundle.training["backends"] == ["b1", "b2", "b3"]
    assert set(bundle.training["candidates"]) == {"ridge", "rf", "lgbm", "mlp", "table"}
    for name, r in bundle.ranges.items():
        col = result.dataset.columns([name])[result.split.train, 0]
        assert r.min == pytest.approx(col.min()) and r.max == pytest.approx(col.max())
        assert r.min <= r.p1 <= r.p99 <= r.max


def test_every_candidate_was_exported_with_parity_and_timed(
    trained: tuple[Path, pipeline.TrainResult],
) -> None:
    _, result = trained
    for cand in result.candidates:
        assert cand.error is None, cand.error
        assert cand.parity is not None and cand.parity.max_rel_error <= 1e-3
        assert cand.inference["batch"] == 3
    sel = result.selected
    fitting = [c for c in result.candidates if c.fits_budget]
    if fitting:
        assert sel.val["accuracy"] == max(c.val["accuracy"] for c in fitting)
    assert result.budget_s == pytest.approx(0.01 * float(np.median(result.dataset.y)))


def test_report_is_written_with_plots(trained: tuple[Path, pipeline.TrainResult]) -> None:
    out, result = trained
    text = (out / "report" / "report.md").read_text()
    assert f"Selected: **{result.selected.family}**" in text
    assert "Global vs per-backend models" in text and "| req_class |" in text
    assert "per-cell table" in text and "| table |" in text.replace("**", "")
    for png in ("accuracy_vs_time.png", "predicted_vs_observed.png", "feature_correlations.png"):
        assert (out / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_line_trains_and_prints_the_figures(
    synth_path: Path, tmp_path: Path, small_args: Args, capsys: pytest.CaptureFixture[str]
) -> None:
    out, report = tmp_path / "model", tmp_path / "report"
    code = presage(
        ["train", *small_args(synth_path, out, "--families", "ridge,lgbm", "--report", str(report))]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "decision p50/p99" in printed
    assert load_bundle(out).family in ("ridge", "lgbm")
    assert (report / "report.md").exists() and not (out / "report").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "report"]  # no temporaries left


def _write(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_bytes(b"".join(samples.dumps(r) for r in records))
    return path


def _valid_records(synth_path: Path, n: int) -> list[dict[str, object]]:
    lines = synth_path.read_bytes().splitlines()
    return [orjson.loads(line) for line in lines[: n + 1]]


BAD_INPUTS: dict[str, tuple[Callable[[Path, Path], list[str]], str]] = {
    "missing file": (lambda d, s: ["--data", str(d / "nope.jsonl")], "no such samples file"),
    "too few samples": (lambda d, s: ["--data", str(_write(d / "few.jsonl", _valid_records(s, 50)))],
                        r"too few samples: \d+ usable of 50 read"),
    "missing columns": (
        lambda d, s: ["--data", str(_write(d / "cols.jsonl", [
            *_valid_records(s, 300)[:-1],
            {**_valid_records(s, 300)[-1], "candidates": [
                {"backend": "b1", "x": [0.1, 0.2], "local": [0, 0, 0]},
                {"backend": "b2", "x": [0.1, 0.2], "local": [0, 0, 0]},
                {"backend": "b3", "x": [0.1, 0.2], "local": [0, 0, 0]}]},
        ]))],
        "missing columns: sample .* has 2 feature values",
    ),
    "missing field": (
        lambda d, s: ["--data", str(_write(d / "field.jsonl", [*_valid_records(s, 3),
                                                              {"type": "sample", "ts": 1.0}]))],
        "line 5: bad sample",
    ),
    "nan": (
        lambda d, s: ["--data", str(_write_nan(d / "nan.jsonl", s))],
        r"NaN/Infinity value",
    ),
    "single backend": (
        lambda d, s: ["--data", str(_write(d / "one.jsonl", [
            r if r.get("type") == "header" else {**r, "chosen": "b1"} for r in _valid_records(s, 400)
        ]))],
        r"a single backend \(b1\)",
    ),
    "unknown family": (lambda d, s: ["--data", str(s), "--families", "ridge,xgb"], "unknown family 'xgb'"),
    "budget above ten percent": (
        lambda d, s: ["--data", str(s), "--budget-frac", "0.5"], "--budget-frac must be"
    ),
}  # fmt: skip


def _write_nan(path: Path, synth_path: Path) -> Path:
    lines = synth_path.read_bytes().splitlines()[:400]
    lines[200] = lines[200].replace(b'"rtt_s":', b'"rtt_s":NaN,"was":', 1)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_names_the_problem_and_leaves_dir_untouched(
    case: str,
    synth_path: Path,
    trained: tuple[Path, pipeline.TrainResult],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_args, message = BAD_INPUTS[case]
    out = tmp_path / "model"
    out.mkdir()
    for p in trained[0].iterdir():
        if p.is_file():
            (out / p.name).write_bytes(p.read_bytes())
    before = _tree(out)
    args = [*make_args(tmp_path, synth_path), "--out", str(out), "--size", "small", "--no-progress"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "presage train: error:" in err
    assert re.search(message, err), err
    assert _tree(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model")]


def test_refuses_to_replace_a_directory_that_is_not_a_bundle(synth_path: Path, tmp_path: Path) -> None:
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert main(["--data", str(synth_path), "--out", str(precious), "--no-progress"]) == 2
    assert (precious / "notes.txt").read_text() == "keep me"


def test_missing_required_flags_and_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "--data and --out are required" in capsys.readouterr().err
    assert main(["--data", "x", "--out", "y", "--k-grid", "a,b"]) == 2
    assert "--k-grid" in capsys.readouterr().err


def test_environment_supplies_defaults_and_the_command_line_wins(
    synth_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PRESAGE_FAMILIES", "nonesuch")
    assert main(["--data", str(synth_path), "--out", str(tmp_path / "m")]) == 2
    assert "unknown family 'nonesuch'" in capsys.readouterr().err
    monkeypatch.setenv("PRESAGE_BUDGET_FRAC", "0.9")
    code = main(["--data", str(synth_path), "--out", str(tmp_path / "m"), "--families", "ridge"])
    assert code == 2 and "--budget-frac must be" in capsys.readouterr().err


def test_training_reads_several_files_by_glob(tmp_path: Path, small_args: Args) -> None:
    generate(tmp_path / "a.jsonl", n_samples=400, n_backends=2, seed=1, start_ts=1000.0)
    generate(tmp_path / "b.jsonl", n_samples=400, n_backends=2, seed=2, start_ts=5000.0)
    out = tmp_path / "m"
    args = small_args(tmp_path / "*.jsonl", out, "--families", "ridge", "--no-per-backend")
    assert main(args) == 0
    assert load_bundle(out).training["samples_read"] == 800


def test_excluded_inputs_never_reach_the_model(tmp_path: Path, small_args: Args) -> None:
    data = generate(tmp_path / "s.jsonl", n_samples=600, n_backends=2, seed=3)
    out = tmp_path / "m"
    args = small_args(data, out, "--families", "ridge", "--no-per-backend", "--exclude", "host_*,cg_*")
    assert main(args) == 0
    names = load_bundle(out).feature_names
    assert names and not any(n.startswith(("host_", "cg_")) for n in names)
    assert main(small_args(data, tmp_path / "none", "--families", "ridge", "--exclude", "*")) == 2
