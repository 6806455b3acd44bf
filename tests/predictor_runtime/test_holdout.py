"""Assessing a bundle on a later recording (``holdout``, ``presage train --assess``): the figures are
the ones computed by hand from the samples and the native model, and bad input is named."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from predictor_runtime import calibration
from predictor_runtime.bundle import write_bundle
from predictor_runtime.train import assess
from predictor_runtime.train.cli import main
from predictor_runtime.train.dataset import TrainInputError, build_dataset, read_samples
from predictor_runtime.train.holdout import assess_bundle

TINY_NAMES = ("host_cpu_util", "req_class", "backend=b1")


def _head(src: Path, dst: Path, n: int) -> Path:
    """The header and the first ``n`` samples of ``src``: a tiny recording."""
    lines = src.read_bytes().splitlines(keepends=True)
    dst.write_bytes(b"".join(lines[: n + 1]))
    return dst


@pytest.fixture
def tiny(tmp_path: Path, make_tiny_model: Callable, make_tiny_meta: Callable) -> tuple[Path, object]:
    """A ridge bundle on (host_cpu_util, req_class, backend=b1), scaled by 0.9, and its native model."""
    model, onnx, x = make_tiny_model()
    meta = make_tiny_meta(onnx, x)
    meta["target"]["scale"] = 0.9
    write_bundle(tmp_path / "tiny", onnx, meta)
    return tmp_path / "tiny", model


def test_accuracy_is_the_one_computed_by_hand(tmp_path: Path, synth_later_path: Path, tiny) -> None:
    bundle, model = tiny
    data = _head(synth_later_path, tmp_path / "later.jsonl", 120)  # past the refit's 50 observations
    h = assess_bundle(bundle, [str(data)])

    # by hand: the usable rows (failures dropped), the native model, the bundle's log transform and scale
    rows = [s for s in read_samples([str(data)]) if 0 < s.status < 500]
    observed, predicted = [], []
    for s in rows:
        cand = next(c for c in s.candidates if c.backend == s.chosen)
        x = [cand.x[s.feature_names.index("host_cpu_util")], s.req_class, 1.0 if s.chosen == "b1" else 0.0]
        predicted.append(0.9 * float(np.exp(model.predict(np.array([x], dtype=np.float32))[0])))
        observed.append(s.rtt_s)
    ape = [abs(p - y) / y for p, y in zip(predicted, observed, strict=True)]
    assert h.samples_used == len(rows) > 20
    assert h.metrics["accuracy"] == pytest.approx(1.0 - sum(ape) / len(ape), abs=1e-5)
    assert h.metrics["mae_s"] == pytest.approx(np.mean(np.abs(np.subtract(predicted, observed))), rel=1e-4)
    assert h.metrics["p95_ape"] == pytest.approx(np.percentile(ape, 95), rel=1e-4)
    assert h.median_rtt_s == pytest.approx(float(np.median(observed)))
    # the decision time is the bundle's (tiny_meta: p50 10 us, p99 20 us) over that median
    assert h.decision_share["p50"] == pytest.approx(1e-5 / np.median(observed))
    assert h.decision_share["p99"] == pytest.approx(2e-5 / np.median(observed))
    assert h.bundle_accuracy == pytest.approx(0.9) and h.family == "ridge"
    # the bundle's only one-hot column is b1: the others are scored with zeros there, and named
    assert h.unseen_backends == tuple(sorted({s.chosen for s in rows} - {"b1"})) != ()
    # with the proxy's live level refit: the same predictions, each times the factor fitted on the
    # requests that had completed before it was dispatched (in dispatch order)
    order = np.argsort([s.ts for s in rows], kind="stable")
    ts, obs, pred = (np.array(v)[order] for v in ([s.ts for s in rows], observed, predicted))
    refit = calibration.replay(ts, obs, pred)
    by_hand = 1.0 - float(np.mean(np.abs(refit - obs) / obs))
    assert h.calibrated["accuracy"] == pytest.approx(by_hand, abs=1e-5)
    assert abs(h.calibrated["accuracy"] - h.metrics["accuracy"]) > 1e-3  # the refit did move the level


def test_noise_check_matches_the_training_report_on_the_same_rows(synth_later_path: Path, tiny) -> None:
    bundle, _ = tiny
    h = assess_bundle(bundle, [str(synth_later_path)])
    ds = build_dataset(read_samples([str(synth_later_path)]), min_samples=1)
    keys = [ds.backend, ds.columns(["req_class"])[:, 0], np.minimum(ds.columns(["proxy_in_flight"])[:, 0], 4)]
    expected = assess.cell_ceiling(ds.y, keys)
    assert h.noise["accuracy"] == pytest.approx(expected["accuracy"])
    assert h.noise["cells"] == expected["cells"]
    assert h.samples_read == 1200 and h.samples_used + sum(h.dropped.values()) == 1200


def test_a_trained_bundle_scores_a_later_run_as_its_own_test_split_would(
    trained, synth_later_path: Path
) -> None:
    out, result = trained
    h = assess_bundle(out, [str(synth_later_path)])
    assert h.family == result.selected.family
    assert 0.3 < h.metrics["accuracy"] <= 1.0 and h.metrics["spearman"] > 0.3  # same world, new seed
    assert h.as_dict()["metrics"]["n"] == h.samples_used


def test_cli_prints_the_figures(tmp_path: Path, synth_later_path: Path, tiny, capsys) -> None:
    bundle, _ = tiny
    assert main(["--data", str(synth_later_path), "--assess", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "held-out ridge bundle on" in out and "accuracy 0." in out and "noise check" in out
    assert "with the live level refit 0." in out


def _without(src: Path, dst: Path, name: str) -> Path:
    """``src`` with the agent feature ``name`` removed from the header and every vector."""
    out = []
    index = None
    for line in src.read_bytes().splitlines():
        rec = orjson.loads(line)
        if rec["type"] == "header":
            index = rec["feature_names"].index(name)
            del rec["feature_names"][index]
        else:
            for c in rec["candidates"]:
                if c["x"] is not None:
                    del c["x"][index]
        out.append(orjson.dumps(rec))
    dst.write_bytes(b"\n".join(out) + b"\n")
    return dst


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing file", "no such samples file"),
        ("missing bundle", "no such bundle directory"),
        ("no samples", "the data holds none"),
        ("bundle input missing", "lacks 1 of the bundle's inputs: host_cpu_util"),
    ],
)
def test_bad_input_is_named(
    case: str, message: str, tmp_path: Path, synth_later_path: Path, tiny, capsys
) -> None:
    bundle, _ = tiny
    data = synth_later_path
    if case == "missing file":
        data = tmp_path / "absent.jsonl"
    elif case == "missing bundle":
        bundle = tmp_path / "no-bundle"
    elif case == "no samples":
        data = _head(synth_later_path, tmp_path / "header-only.jsonl", 0)
    else:
        data = _without(synth_later_path, tmp_path / "fewer.jsonl", "host_cpu_util")
    with pytest.raises(TrainInputError, match=message):
        assess_bundle(bundle, [str(data)])
    assert main(["--data", str(data), "--assess", str(bundle)]) == 2
    assert message in capsys.readouterr().err
