"""The model families built and assessed for every training run.

Each is small enough that its exported ONNX graph scores a batch of candidates in microseconds:

* ``ridge``: ``StandardScaler`` + ``Ridge`` — the floor any learned model must beat;
* ``rf``: a random forest with bounded depth and tree count (inference cost grows with both);
* ``lgbm``: LightGBM gradient-boosted trees;
* both tree families with monotone constraints where the direction is known — the safeguard of
  vPALs: more CPU/memory/IO pressure, a longer queue, more requests in flight, more load or
  throttling never predicts a *faster* RTT (+1 constraints, by name pattern; window slopes are
  left free, their sign says nothing certain). Unconstrained, a forest trained on the testbed
  predicted a shorter RTT at some higher in-flight counts than at lower ones, and the proxy,
  which reads its own in-flight count per decision, kept sending more to the busier backend;
* ``mlp``: a small multi-layer perceptron behind a ``StandardScaler``;
* ``table``: a lookup table of the MAPE-optimal constant per (backend, request class, in-flight
  count), written as one decision tree over those inputs only (a tree over them *is* a table, and
  skl2onnx exports it like any tree). Split by weighted absolute error on log RTT with weights
  1/RTT (the pipeline always passes them), so that every leaf holds the weighted median of log RTT
  with weights 1/RTT, i.e. the log of the constant that minimises the MAPE of its rows;
  ``table_min_leaf`` rows at least per cell (thinner cells merge with a neighbour), monotone
  non-decreasing in the in-flight count. On the three quiet recorded testbed runs it beat every
  learned family on a later run: requests that look alike to these inputs scatter by a quarter,
  and a learned model's extra inputs fit that run's noise.

All are fit on the transformed target (log RTT by default: squared error on log RTT is relative
error, which is what 1 - MAPE measures).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

LEARNED: tuple[str, ...] = ("ridge", "rf", "lgbm", "mlp")  # the default --families
FAMILIES: tuple[str, ...] = (*LEARNED, "table")
# The inputs of the ``table`` family besides the backend one-hot columns: the noise check's keys.
TABLE_INPUTS: tuple[str, ...] = ("req_class", "proxy_in_flight")

# Base-metric patterns whose growth can only slow a request down (vPALs-style monotone safeguard).
_SLOWER_WHEN_HIGHER = re.compile(
    r"(cpu_util|load1|psi_|mem_used|mem_limit_frac|throttled|queue_length|in_flight|proxy_ewma_s)"
)


@dataclass(frozen=True, slots=True)
class ZooConfig:
    """Model sizes. ``small()`` is for tests and quick looks; the default is what ships."""

    ridge_alpha: float = 1.0
    rf_trees: int = 60
    rf_depth: int = 10
    lgbm_trees: int = 120
    lgbm_leaves: int = 15
    lgbm_learning_rate: float = 0.1
    mlp_hidden: tuple[int, ...] = (32, 16)
    mlp_max_iter: int = 300
    table_min_leaf: int = 10

    @classmethod
    def small(cls) -> ZooConfig:
        return cls(rf_trees=15, rf_depth=6, lgbm_trees=60, lgbm_leaves=15, lgbm_learning_rate=0.15,
                   mlp_hidden=(16,), mlp_max_iter=80)  # fmt: skip


def check_families(families: Sequence[str]) -> tuple[str, ...]:
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown family {unknown[0]!r} (known: {', '.join(FAMILIES)})")
    if not families:
        raise ValueError(f"no family given (known: {', '.join(FAMILIES)})")
    return tuple(dict.fromkeys(families))


def monotone_constraints(names: Sequence[str]) -> list[int]:
    """+1 for inputs that can only make a request slower; 0 (free) for the rest."""
    out = []
    for name in names:
        base, _, agg = name.partition(".")
        out.append(1 if _SLOWER_WHEN_HIGHER.search(base) and not agg.startswith("slope") else 0)
    return out


def make_model(family: str, names: Sequence[str], cfg: ZooConfig, seed: int) -> Any:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if family == "ridge":
        from sklearn.linear_model import Ridge

        return make_pipeline(StandardScaler(), Ridge(alpha=cfg.ridge_alpha))
    if family == "rf":
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(
            n_estimators=cfg.rf_trees, max_depth=cfg.rf_depth, min_samples_leaf=3,
            max_features=0.5, monotonic_cst=monotone_constraints(names), n_jobs=1, random_state=seed,
        )  # fmt: skip
    if family == "table":
        from sklearn.tree import DecisionTreeRegressor

        return DecisionTreeRegressor(
            criterion="absolute_error", min_samples_leaf=cfg.table_min_leaf,
            monotonic_cst=monotone_constraints(names), random_state=seed,
        )  # fmt: skip
    if family == "lgbm":
        from lightgbm import LGBMRegressor

        return LGBMRegressor(
            n_estimators=cfg.lgbm_trees, num_leaves=cfg.lgbm_leaves, learning_rate=cfg.lgbm_learning_rate,
            min_child_samples=10, subsample=0.8, subsample_freq=1, colsample_bytree=0.8,
            monotone_constraints=monotone_constraints(names), n_jobs=1, random_state=seed,
            deterministic=True, force_row_wise=True, verbose=-1,
        )  # fmt: skip
    if family == "mlp":
        from sklearn.neural_network import MLPRegressor

        mlp = MLPRegressor(
            hidden_layer_sizes=cfg.mlp_hidden, max_iter=cfg.mlp_max_iter, early_stopping=True,
            learning_rate_init=3e-3, alpha=1e-4, random_state=seed,
        )  # fmt: skip
        return make_pipeline(StandardScaler(), mlp)
    raise ValueError(f"unknown family {family!r}")


def fit(
    family: str,
    x: np.ndarray,
    y: np.ndarray,
    names: Sequence[str],
    cfg: ZooConfig,
    seed: int,
    weight: np.ndarray | None = None,
) -> Any:
    """Fit one family on float32 rows (``weight``: per-row sample weights); a bounded iteration
    budget is the point, not a warning."""
    from sklearn.exceptions import ConvergenceWarning

    model = make_model(family, names, cfg, seed)
    x = np.asarray(x, dtype=np.float32)
    if family == "table":
        # the pipeline gives the table only its inputs; any other column is made constant, and a
        # tree never splits on a column without variance, so the graph never reads it
        x = np.where(table_columns(names), x, np.float32(0.0))
    kw: dict[str, Any] = {}
    if weight is not None:  # a scikit-learn pipeline routes it to its last step
        step = f"{model.steps[-1][0]}__" if hasattr(model, "steps") else ""
        kw = {f"{step}sample_weight": np.asarray(weight, dtype=np.float64)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y, **kw)
    return model


def table_columns(names: Sequence[str]) -> np.ndarray:
    """Mask of the ``table`` family's inputs: backend one-hot columns and ``TABLE_INPUTS``."""
    return np.array([n.startswith("backend=") or n in TABLE_INPUTS for n in names], dtype=bool)


def predict(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(np.asarray(x, dtype=np.float32)), dtype=np.float64).reshape(-1)
