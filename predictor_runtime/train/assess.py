"""Assessment: accuracy on the later-in-time split and inference time of the exported model.

Accuracy is ``1 - MAPE`` of predicted vs observed RTT (the measure of Morpheus and of "Accurate
Performance Predictors for Edge Computing Applications"); MAE (seconds), the 95th percentile of the
absolute percentage error and R² are reported beside it.

Inference time is measured on the exported ONNX bytes through ``Scorer`` — the code the proxy runs —
at the real batch size (one row per backend), over many calls after a warm-up, as p50 and p99 of
wall time per call (``perf_counter_ns``). It is a measurement of this machine at this moment: the
report says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence

import numpy as np

# The bundle's level (``mape_scale``) lives beside the proxy's live refit of the same constant;
# re-exported here, where the training pipeline and its tests read them.
from predictor_runtime.calibration import SCALE_BOUNDS as SCALE_BOUNDS
from predictor_runtime.calibration import mape_scale as mape_scale
from predictor_runtime.calibration import weighted_median as weighted_median
from predictor_runtime.scorer import Scorer


def cell_constants(cells: Sequence[Hashable], observed_s: np.ndarray, min_rows: int = 5) -> np.ndarray:
    """Per row, the MAPE-optimal constant of its cell (the rows with an equal ``cells`` entry): the
    1/RTT-weighted median of the cell's observations; NaN for the rows of cells of fewer than
    ``min_rows`` (a constant fitted on one row is exact and says nothing)."""
    obs = np.asarray(observed_s, dtype=np.float64)
    groups: dict[Hashable, list[int]] = {}
    for i, cell in enumerate(cells):
        groups.setdefault(cell, []).append(i)
    out = np.full(len(obs), np.nan)
    for idx in groups.values():
        if len(idx) >= min_rows:
            y = obs[idx]
            out[idx] = weighted_median(y, 1.0 / np.maximum(y, 1e-9))
    return out


def cell_ceiling(observed_s: np.ndarray, keys: Sequence[np.ndarray], min_rows: int = 5) -> dict[str, float]:
    """How well *any* model that sees only ``keys`` could do: 1 - MAPE when every row is predicted
    by the MAPE-optimal constant of its cell (rows with equal keys, ``cell_constants``), fitted on
    the rows themselves.

    An optimistic bound (the constants are fitted on the very rows they are scored on), and an
    honest measure of the noise a model faces: if requests to the same backend, of the same class,
    with the same number already in flight there, still differ in RTT by a factor of a few, no
    choice of model family reaches a high 1 - MAPE from these inputs. Cells of fewer than
    ``min_rows`` rows are left out.
    """
    obs = np.asarray(observed_s, dtype=np.float64)
    cells = list(zip(*keys, strict=True)) if len(obs) else []
    const = cell_constants(cells, obs, min_rows)
    ok = np.isfinite(const)
    if not ok.any():
        return {"accuracy": float("nan"), "rows": 0.0, "cells": 0.0}
    ape = np.abs(const[ok] - obs[ok]) / np.maximum(obs[ok], 1e-9)
    scored = {cell for cell, good in zip(cells, ok.tolist(), strict=True) if good}
    return {"accuracy": float(1.0 - ape.mean()), "rows": float(ok.sum()), "cells": float(len(scored))}


def spearman(observed_s: np.ndarray, predicted_s: np.ndarray) -> float:
    """Rank correlation of predicted and observed RTT: what routing by argmin actually uses."""
    from scipy.stats import spearmanr

    obs = np.asarray(observed_s, dtype=np.float64)
    pred = np.asarray(predicted_s, dtype=np.float64)
    if len(obs) < 3 or np.ptp(obs) == 0 or np.ptp(pred) == 0:
        return 0.0
    return float(spearmanr(obs, pred).statistic)


def accuracy_metrics(observed_s: np.ndarray, predicted_s: np.ndarray) -> dict[str, float]:
    obs = np.asarray(observed_s, dtype=np.float64)
    pred = np.asarray(predicted_s, dtype=np.float64)
    ape = np.abs(pred - obs) / np.maximum(obs, 1e-9)
    ss_res = float(((obs - pred) ** 2).sum())
    ss_tot = float(((obs - obs.mean()) ** 2).sum())
    mape = float(ape.mean())
    return {
        "accuracy": 1.0 - mape,
        "mape": mape,
        "mae_s": float(np.abs(pred - obs).mean()),
        "p95_ape": float(np.percentile(ape, 95)),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0,
        "spearman": spearman(obs, pred),
        "n": float(len(obs)),
    }


def inference_time(
    onnx: bytes,
    names: tuple[str, ...],
    transform: str,
    rows: np.ndarray,
    batch: int,
    *,
    calls: int = 2000,
    warmup: int = 50,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> dict[str, float]:
    """p50/p99 seconds of one ``Scorer.score`` call on ``batch`` rows drawn from ``rows``."""
    scorer = Scorer(onnx, names, transform, max_batch=batch)
    buf = scorer.input_buffer(batch)
    reps = np.resize(np.arange(len(rows)), batch * 8)
    samples = np.empty(calls, dtype=np.int64)
    for i in range(warmup + calls):
        start = (i * batch) % (len(reps) - batch + 1)
        buf[:] = rows[reps[start : start + batch]]
        t0 = clock()
        scorer.score(buf)
        if i >= warmup:
            samples[i - warmup] = clock() - t0
    p50, p99 = np.percentile(samples, [50, 99]) / 1e9
    return {"p50_s": float(p50), "p99_s": float(p99), "batch": float(batch), "calls": float(calls)}
