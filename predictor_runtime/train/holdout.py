"""Assess an exported bundle on a separate recording: accuracy on a held-out *later run*.

``presage train`` reports accuracy on the latest split of the very run it trained on. The issue's
target is measured on another, later run of the testbed: new arrivals, new sizes, agents and
backends restarted. This module scores every usable sample of such a recording with the bundle,
through ``Scorer`` (onnxruntime on the bundle's ONNX bytes, with its transform and scale: what the
proxy runs), and reports

* accuracy ``1 - MAPE``, MAE, p95 absolute percentage error, R² and Spearman
  (``assess.accuracy_metrics``, the measures of the training report);
* the same measures for the predictions the proxy would have reported, with its live refit of the
  model's level (``predictor_runtime.calibration.replay``: causal, over the recording in dispatch
  order; routing is the same either way);
* the noise check on that recording (``assess.cell_ceiling`` by backend, request class and
  in-flight count, as the training report computes it on its test split);
* the decision time the bundle carries (inference p50/p99 at the real batch size, measured when it
  was trained) as a share of the recording's median RTT: the issue's 1% budget.

The rows are built exactly as training builds them (``dataset.build_dataset``: the chosen
candidate's vector at dispatch, failures dropped and counted). A backend the bundle never saw gets
all-zero one-hot inputs, as the proxy gives it; such backends are named in the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from predictor_runtime import calibration
from predictor_runtime.bundle import Bundle, BundleError, load_bundle
from predictor_runtime.scorer import Scorer

from . import assess
from .dataset import DEFAULT_STREAM, Dataset, TrainInputError, build_dataset, read_samples
from .pipeline import noise_check

SCORE_CHUNK = 4096  # rows per onnxruntime call: bounded buffers, same result as one call per row


@dataclass(frozen=True, slots=True)
class Holdout:
    """What a bundle scores on one recording (``as_dict`` for JSON)."""

    bundle: str
    family: str
    sources: tuple[str, ...]
    metrics: dict[str, float]  # accuracy, mape, mae_s, p95_ape, r2, spearman, n
    calibrated: dict[str, float]  # the same, with the proxy's live level refit
    noise: dict[str, float]  # assess.cell_ceiling on the recording
    median_rtt_s: float
    inference: dict[str, float]  # the bundle's p50_s, p99_s
    decision_share: dict[str, float]  # inference / median RTT: p50, p99
    bundle_accuracy: float | None  # what training measured on its own test split
    samples_read: int
    samples_used: int
    dropped: dict[str, int] = field(default_factory=dict)
    unseen_backends: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def assess_bundle(
    bundle: str | Path | Bundle, data: Sequence[str], *, stream: str = DEFAULT_STREAM
) -> Holdout:
    """Score every usable sample of ``data`` with ``bundle``; bad input raises ``TrainInputError``."""
    b = bundle if isinstance(bundle, Bundle) else _load(bundle)
    ds = build_dataset(read_samples(data, stream=stream), min_samples=1)
    observed, predicted = ds.y, predict(b, ds)
    median = float(np.median(observed))
    inference = {k: float(b.inference[k]) for k in ("p50_s", "p99_s") if k in b.inference}
    known = {n.removeprefix("backend=") for n in b.feature_names if n.startswith("backend=")}
    return Holdout(
        bundle=str(b.path), family=b.family, sources=tuple(data),
        metrics=assess.accuracy_metrics(observed, predicted),
        calibrated=assess.accuracy_metrics(observed, calibration.replay(ds.ts, observed, predicted)),
        noise=noise_check(ds, np.arange(len(ds))),
        median_rtt_s=median, inference=inference,
        decision_share={k.removesuffix("_s"): v / median for k, v in inference.items()},
        bundle_accuracy=_float_or_none(b.metrics.get("accuracy")),
        samples_read=ds.n_read, samples_used=len(ds), dropped=dict(ds.dropped),
        unseen_backends=tuple(sorted(set(ds.backends) - known)) if known else (),
    )  # fmt: skip


def predict(bundle: Bundle, ds: Dataset) -> np.ndarray:
    """Predicted RTT (s) of every row of ``ds``, through the proxy's ``Scorer``."""
    missing = [n for n in bundle.feature_names if n not in ds.names and not n.startswith("backend=")]
    if missing:
        raise TrainInputError(
            f"the recording lacks {len(missing)} of the bundle's inputs: {', '.join(missing[:8])}"
            + (" ..." if len(missing) > 8 else "")
        )
    x = ds.columns(bundle.feature_names)
    scorer = Scorer.load(bundle, max_batch=max(1, bundle.batch_size))
    out = np.empty(len(ds), dtype=np.float64)
    for start in range(0, len(ds), SCORE_CHUNK):
        out[start : start + SCORE_CHUNK] = scorer.score(x[start : start + SCORE_CHUNK])
    return out


def _load(path: str | Path) -> Bundle:
    try:
        return load_bundle(path)
    except BundleError as exc:
        raise TrainInputError(f"--assess: {exc}") from None


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def summary_line(h: Holdout) -> str:
    """One paragraph for a terminal: the figures of ``h``."""
    m, n = h.metrics, h.noise
    share = ", ".join(f"{k} {100 * v:.2f}%" for k, v in h.decision_share.items())
    return (
        f"held-out {h.family} bundle on {h.samples_used} samples ({h.samples_read} read): accuracy "
        f"{m['accuracy']:.4f} (1 - MAPE), MAE {m['mae_s'] * 1e3:.3f} ms, p95 APE {m['p95_ape']:.3f}, "
        f"R2 {m['r2']:.3f}, Spearman {m['spearman']:.3f}; with the live level refit "
        f"{h.calibrated['accuracy']:.4f}; noise check {n['accuracy']:.4f} over "
        f"{int(n['cells'])} cells; median RTT {h.median_rtt_s * 1e3:.2f} ms, decision time {share} of it"
        + (f"; backends unseen in training: {', '.join(h.unseen_backends)}" if h.unseen_backends else "")
    )
