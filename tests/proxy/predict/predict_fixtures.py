"""Helpers: a real exported ONNX model over named inputs, and feature snapshots to score it against.

The model is a ridge regression fitted by the training pipeline's own zoo and exported with
skl2onnx (``predictor_runtime.train``): ``rtt = 2 ms x 1.15 ** app_queue_length`` (log target), so
the backend with the shortest queue is the one it predicts fastest.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from predictor_runtime.bundle import FeatureRange, build_meta, write_bundle
from predictor_runtime.train import zoo
from predictor_runtime.train.export import to_onnx
from proxy.features import FeatureSnapshot

MODEL_NAMES = ("app_queue_length", "req_class")
SNAP_NAMES = ("host_cpu_util", "app_queue_length")


def true_rtt(queue: np.ndarray | float) -> np.ndarray | float:
    return 0.002 * 1.15 ** np.asarray(queue)


def write_queue_model(
    out: Path, seed: int = 0, *, in_flight: bool = False, family: str = "ridge", request: bool = False
) -> Path:
    """The queue model; with ``in_flight`` it also reads this proxy's in-flight count per backend
    (``rtt x 1.15 ** (queue + in_flight)``), the per-endpoint input that prediction tables index
    by; with ``request`` also the request's body size and method (a POST counts as 3 more in the
    queue; the size is noise). ``family`` is any of the training zoo's
    (``predictor_runtime.train.zoo.FAMILIES``)."""
    rng = np.random.default_rng(seed)
    queue = rng.integers(0, 21, 2000).astype(np.float64)
    cls = rng.choice([0.0, 1.0, 2.0], 2000)
    names = MODEL_NAMES
    columns = [queue, cls]
    total = queue
    if in_flight:
        flight = rng.integers(0, 11, 2000).astype(np.float64)
        names, columns, total = (*names, "proxy_in_flight"), [*columns, flight], total + flight
    if request:
        size = rng.choice([0.0, 100.0, 1000.0], 2000)
        is_get = rng.choice([0.0, 1.0], 2000)
        names, columns = (*names, "req_bytes", "req_is_get"), [*columns, size, is_get]
        total = total + 3 * (1 - is_get)
    x = np.column_stack(columns).astype(np.float32)
    y = np.log(true_rtt(total) * rng.lognormal(0.0, 0.05, 2000))
    model = zoo.fit(family, x, y, names, zoo.ZooConfig(), seed)
    onnx = to_onnx(model, family, len(names))
    ranges = {
        n: FeatureRange(lo, hi, lo, hi)
        for n, lo, hi in zip(names, x.min(axis=0).tolist(), x.max(axis=0).tolist(), strict=True)
    }
    meta = build_meta(
        onnx=onnx, feature_names=names, transform="log", ranges=ranges,
        metrics={"accuracy": 0.95, "mae_s": 0.001, "p95_ape": 0.1, "r2": 0.9},
        inference={"p50_s": 1e-5, "p99_s": 2e-5}, batch_size=4, family=family,
        training={"samples_used": 2000},
    )  # fmt: skip
    write_bundle(out, onnx, meta)
    return out


def snapshot(
    queues: Sequence[float], *, ids: Sequence[str] | None = None, age_s: float = 0.1, now: float | None = None
) -> FeatureSnapshot:
    """A snapshot as the feature store builds it: one row per backend, columns in schema order."""
    now = time.time() if now is None else now
    ids = tuple(ids or (f"b{i}" for i in range(len(queues))))
    matrix = np.array([[0.5, q] for q in queues], dtype=np.float32).reshape(len(ids), len(SNAP_NAMES))
    n = len(ids)
    return FeatureSnapshot(
        names=SNAP_NAMES,
        backend_ids=ids,
        index={bid: i for i, bid in enumerate(ids)},
        matrix=matrix,
        sample_ts=np.full(n, now - age_s),
        vector_seq=np.arange(n, dtype=np.int64),
        has_vector=np.ones(n, dtype=bool),
        missing=((),) * n,
        ttl_s=3.0,
        seq=1,
        built_at=now,
    )
