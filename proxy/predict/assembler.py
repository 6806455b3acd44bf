"""Fill a model's input matrix for a set of candidate backends, without per-request lookups.

A model's inputs are named (``model.json`` ``feature_names``; naming in
``predictor_runtime.samples``): agent features by schema name, proxy-local signals, request
features and backend one-hot columns. When the feature snapshot or the model changes, ``rebind``
computes once a *base* matrix, one row per backend in the snapshot, holding every column that does
not change per request (agent features, one-hot identity). Per request only a row gather and a
handful of column writes remain (STYLE.md item 5: cache what can be cached at snapshot build).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from predictor_runtime.samples import LOCAL_FEATURES, REQUEST_FEATURES, backend_feature

from ..balancer.base import Endpoint, RequestInfo


@dataclass(frozen=True, slots=True)
class BoundInputs:
    """Column plan for one (model, snapshot) pair."""

    base: np.ndarray  # float32 [n_backends, k], read-only
    row_of: Mapping[str, int]  # backend id -> row in ``base``
    fresh_ts: np.ndarray  # float64 [n_backends] sample time of each backend's vector, NaN if none
    col_in_flight: int
    col_ewma: int
    col_age: int
    col_bytes: int
    col_class: int
    col_is_get: int
    missing: tuple[str, ...]  # model inputs no source provides (counted, filled with 0)


def _col(names: Sequence[str], name: str) -> int:
    try:
        return names.index(name)
    except ValueError:
        return -1


def bind(
    model_names: Sequence[str],
    snap_names: Sequence[str],
    backend_ids: Sequence[str],
    snap_matrix: np.ndarray,
    sample_ts: np.ndarray,
) -> BoundInputs:
    """Build the per-snapshot base matrix for ``model_names``."""
    names = list(model_names)
    n, k = len(backend_ids), len(names)
    base = np.zeros((n, k), dtype=np.float32)
    snap_index = {name: i for i, name in enumerate(snap_names)}
    model_cols = [j for j, name in enumerate(names) if name in snap_index]
    snap_cols = [snap_index[names[j]] for j in model_cols]
    if model_cols and n:
        base[:, model_cols] = snap_matrix[:, snap_cols]
    for row, bid in enumerate(backend_ids):
        j = _col(names, backend_feature(bid))
        if j >= 0:
            base[row, j] = 1.0
    known = set(snap_index) | set(LOCAL_FEATURES) | set(REQUEST_FEATURES)
    missing = tuple(name for name in names if name not in known and not name.startswith("backend="))
    base.flags.writeable = False
    return BoundInputs(
        base=base,
        row_of={bid: i for i, bid in enumerate(backend_ids)},
        fresh_ts=np.asarray(sample_ts, dtype=np.float64),
        col_in_flight=_col(names, "proxy_in_flight"),
        col_ewma=_col(names, "proxy_ewma_s"),
        col_age=_col(names, "proxy_feature_age_s"),
        col_bytes=_col(names, "req_bytes"),
        col_class=_col(names, "req_class"),
        col_is_get=_col(names, "req_is_get"),
        missing=missing,
    )


def fill(
    bound: BoundInputs,
    endpoints: Sequence[Endpoint],
    request: RequestInfo,
    now: float,
    wall: float,
    out: np.ndarray,
    ages: np.ndarray,
) -> bool:
    """Write one row per endpoint into ``out[:n]`` and each vector's age into ``ages[:n]``.

    ``now`` is the pool's (monotonic) clock for the endpoints' EWMA; ``wall`` is unix time, the
    clock the agents stamp their vectors with.

    Returns False when an endpoint has no row in the snapshot (the caller falls back: a backend
    without features is unknown, never idle).
    """
    row_of = bound.row_of
    for i, ep in enumerate(endpoints):
        row = row_of.get(ep.id)
        if row is None:
            return False
        out[i] = bound.base[row]
        ages[i] = wall - bound.fresh_ts[row]
        if bound.col_in_flight >= 0:
            out[i, bound.col_in_flight] = ep.in_flight
        if bound.col_ewma >= 0:
            out[i, bound.col_ewma] = ep.ewma_cost(now)
    n = len(endpoints)
    if bound.col_age >= 0:
        out[:n, bound.col_age] = ages[:n]
    if bound.col_bytes >= 0:
        out[:n, bound.col_bytes] = request.body_bytes
    if bound.col_class >= 0:
        out[:n, bound.col_class] = request.req_class
    if bound.col_is_get >= 0:
        out[:n, bound.col_is_get] = 1.0 if request.method == "GET" else 0.0
    return True
