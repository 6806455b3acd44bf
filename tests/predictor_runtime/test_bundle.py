import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

import predictor_runtime.bundle as bundle_mod
from predictor_runtime.bundle import (
    META_FILE,
    MODEL_FILE,
    Bundle,
    BundleError,
    is_known_feature,
    load_bundle,
    write_bundle,
)


def _rewrite_meta(path: Path, **changes: object) -> None:
    meta = orjson.loads((path / META_FILE).read_bytes())
    meta.update(changes)
    (path / META_FILE).write_bytes(orjson.dumps(meta))


def test_round_trip_keeps_every_field(tiny_bundle: tuple[Bundle, object, np.ndarray]) -> None:
    bundle, _, _ = tiny_bundle
    again = load_bundle(bundle.path)
    assert again.feature_names == ("host_cpu_util", "req_class", "backend=b1")
    assert again.transform == "log" and again.target == "rtt_s"
    assert again.sha256 == hashlib.sha256((bundle.path / MODEL_FILE).read_bytes()).hexdigest()
    assert list(again.ranges) == list(again.feature_names)
    assert again.ranges["req_class"].min == 64.0 and again.ranges["req_class"].max == 1024.0
    assert again.metrics["accuracy"] == 0.9 and again.inference["p99_s"] == 2e-5
    assert again.batch_size == 3 and again.family == "ridge" and again.created_at


def test_tampered_model_is_refused(tiny_bundle: tuple[Bundle, object, np.ndarray]) -> None:
    bundle, _, _ = tiny_bundle
    data = bytearray((bundle.path / MODEL_FILE).read_bytes())
    data[-1] ^= 0xFF
    (bundle.path / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(bundle.path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": 99}, "format_version 99"),
        (
            {"feature_names": ["host_cpu_util", "req_class", "no_such_metric"]},
            "unknown feature name 'no_such_metric'",
        ),
        ({"feature_names": ["req_class", "req_class", "backend=b1"]}, "appears twice"),
        ({"target": {"name": "rtt_s", "transform": "sqrt"}}, "transform 'sqrt'"),
        ({"sha256": "0" * 64}, "sha256"),
        ({"ranges": {}}, "ranges do not match"),
    ],
)
def test_bad_metadata_is_refused_with_the_problem_named(
    tiny_bundle: tuple[Bundle, object, np.ndarray], change: dict[str, object], message: str
) -> None:
    bundle, _, _ = tiny_bundle
    _rewrite_meta(bundle.path, **change)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle.path)


def test_missing_files_are_named(tiny_bundle: tuple[Bundle, object, np.ndarray], tmp_path: Path) -> None:
    bundle, _, _ = tiny_bundle
    os.remove(bundle.path / MODEL_FILE)
    with pytest.raises(BundleError, match=r"missing model\.onnx"):
        load_bundle(bundle.path)
    with pytest.raises(BundleError, match="no such bundle directory"):
        load_bundle(tmp_path / "nowhere")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / META_FILE).write_text("{not json")
    (tmp_path / "garbage" / MODEL_FILE).write_bytes(b"")
    with pytest.raises(BundleError, match="not JSON"):
        load_bundle(tmp_path / "garbage")


def test_write_replaces_an_existing_bundle_and_leaves_no_temporaries(
    tmp_path: Path, make_tiny_model: Any, make_tiny_meta: Any
) -> None:
    tiny_model, tiny_meta = make_tiny_model, make_tiny_meta
    _, onnx_a, x = tiny_model(seed=0)
    _, onnx_b, _ = tiny_model(seed=1)
    out = tmp_path / "model"
    a = write_bundle(out, onnx_a, tiny_meta(onnx_a, x))
    b = write_bundle(out, onnx_b, tiny_meta(onnx_b, x), extra=lambda d: (d / "note.txt").write_text("hi"))
    assert a.sha256 != b.sha256
    assert load_bundle(out).sha256 == b.sha256
    assert (out / "note.txt").read_text() == "hi"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_bundle_that_fails_validation_never_reaches_the_target(
    tmp_path: Path, make_tiny_model: Any, make_tiny_meta: Any
) -> None:
    tiny_model, tiny_meta = make_tiny_model, make_tiny_meta
    _, onnx, x = tiny_model()
    out = tmp_path / "model"
    good = write_bundle(out, onnx, tiny_meta(onnx, x))
    bad_meta = tiny_meta(onnx, x, format_version=0)
    with pytest.raises(BundleError):
        write_bundle(out, onnx, bad_meta)
    with pytest.raises(BundleError, match="sha256"):
        write_bundle(out, onnx + b"x", tiny_meta(onnx, x))
    assert load_bundle(out).sha256 == good.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_feature_naming_follows_the_samples_convention() -> None:
    assert is_known_feature("host_cpu_util.mean_20s")
    assert is_known_feature("app_queue_length.slope_5s")
    assert is_known_feature("proxy_in_flight") and is_known_feature("req_is_get")
    assert is_known_feature("backend=b-7")
    assert not is_known_feature("backend=")
    assert not is_known_feature("host_cpu_util.median_20s")
    assert not is_known_feature("made_up")


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_replace_dir_swaps_whole_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    if exchange:
        assert bundle_mod._renameat2() is not None  # Linux with glibc: the atomic path is the one in use
    else:
        monkeypatch.setattr(bundle_mod, "_renameat2", lambda: None)
    old, new = tmp_path / "model", tmp_path / "incoming"
    old.mkdir()
    (old / "a").write_text("old")
    new.mkdir()
    (new / "b").write_text("new")
    bundle_mod.replace_dir(new, old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in old.iterdir()] == ["b"]


@pytest.mark.parametrize("scale", [0.0, -1.0, "half", True, float("inf")])
def test_a_bad_target_scale_is_refused(tiny_bundle: tuple[Bundle, object, np.ndarray], scale: object) -> None:
    bundle, _, _ = tiny_bundle
    _rewrite_meta(bundle.path, target={"name": "rtt_s", "transform": "log", "scale": scale})
    with pytest.raises(BundleError, match=r"target\.scale"):
        load_bundle(bundle.path)


def test_a_bundle_without_a_scale_reads_as_scale_one(tiny_bundle: tuple[Bundle, object, np.ndarray]) -> None:
    bundle, _, _ = tiny_bundle
    _rewrite_meta(bundle.path, target={"name": "rtt_s", "transform": "log"})
    assert load_bundle(bundle.path).scale == 1.0
