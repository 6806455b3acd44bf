"""Shared fixtures: synthetic samples (loadtest.synth_samples), a tiny exported model, a trained bundle."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from loadtest.synth_samples import generate
from predictor_runtime.bundle import Bundle, FeatureRange, build_meta, write_bundle
from predictor_runtime.train import pipeline, zoo
from predictor_runtime.train.dataset import build_dataset, read_samples
from predictor_runtime.train.export import to_onnx

TINY_NAMES = ("host_cpu_util", "req_class", "backend=b1")


def small_options(**overrides: object) -> pipeline.TrainOptions:
    """Small models and few timing calls: each training run stays within a few seconds."""
    base: dict[str, object] = {
        "zoo": zoo.ZooConfig.small(),
        "k_grid": (4, 8),
        "timing_calls": 100,
        "progress": False,
        "min_samples": 200,
    }
    base.update(overrides)
    return pipeline.TrainOptions(**base)  # type: ignore[arg-type]


def small_train_args(data: Path | str, out: Path, *extra: str) -> list[str]:
    return [
        "--data", str(data), "--out", str(out), "--size", "small", "--k-grid", "4,8",
        "--timing-calls", "100", "--no-progress", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def synth_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,400 samples from 3 heterogeneous backends (seeded)."""
    path = tmp_path_factory.mktemp("synth") / "samples.jsonl"
    return generate(path, n_samples=2400, n_backends=3, seed=7, restart_every=1000)


@pytest.fixture(scope="session")
def synth_later_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same world, different seed: a second recording."""
    path = tmp_path_factory.mktemp("synth") / "later.jsonl"
    return generate(path, n_samples=1200, n_backends=3, seed=8)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, synth_path: Path) -> tuple[Path, pipeline.TrainResult]:
    """One full pipeline run (the four learned families and the table floor, small sizes):
    (bundle directory, result)."""
    out = tmp_path_factory.mktemp("bundle") / "model"
    return out, pipeline.run([str(synth_path)], out, opts=small_options(table_floor=True))


@pytest.fixture(scope="session")
def synth_dataset(synth_path: Path):  # type: ignore[no-untyped-def]
    return build_dataset(read_samples([str(synth_path)]))


def tiny_model(seed: int = 0) -> tuple[object, bytes, np.ndarray]:
    """A ridge model on three named inputs, its ONNX bytes and its training rows."""
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [rng.uniform(0, 1, 500), rng.choice([64.0, 256.0, 1024.0], 500), rng.integers(0, 2, 500)]
    )
    y = np.log(0.002 + 0.01 * x[:, 0] + 2e-5 * x[:, 1] + 0.003 * x[:, 2])
    model = zoo.fit("ridge", x.astype(np.float32), y, TINY_NAMES, zoo.ZooConfig(), seed)
    return model, to_onnx(model, "ridge", 3), x.astype(np.float32)


def tiny_meta(
    onnx: bytes, x: np.ndarray, names: Sequence[str] = TINY_NAMES, **overrides: object
) -> dict[str, object]:
    ranges = {
        n: FeatureRange(float(x[:, j].min()), float(x[:, j].max()), float(np.percentile(x[:, j], 1)),
                        float(np.percentile(x[:, j], 99)))
        for j, n in enumerate(names)
    }  # fmt: skip
    meta = build_meta(
        onnx=onnx, feature_names=names, transform="log", ranges=ranges,
        metrics={"accuracy": 0.9, "mae_s": 0.001, "p95_ape": 0.2, "r2": 0.8},
        inference={"p50_s": 1e-5, "p99_s": 2e-5}, batch_size=3, family="ridge",
        training={"samples_used": 500},
    )  # fmt: skip
    meta.update(overrides)
    return meta


@pytest.fixture
def tiny_bundle(tmp_path: Path) -> tuple[Bundle, object, np.ndarray]:
    model, onnx, x = tiny_model()
    bundle = write_bundle(tmp_path / "tiny", onnx, tiny_meta(onnx, x))
    return bundle, model, x


@pytest.fixture
def make_tiny_model():  # type: ignore[no-untyped-def]
    return tiny_model


@pytest.fixture
def make_tiny_meta():  # type: ignore[no-untyped-def]
    return tiny_meta


@pytest.fixture
def small_opts():  # type: ignore[no-untyped-def]
    return small_options


@pytest.fixture
def small_args():  # type: ignore[no-untyped-def]
    return small_train_args
