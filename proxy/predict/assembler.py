"""Fill a model's input matrix for a set of candidate backends, without per-request lookups.

A model's inputs are named (``model.json`` ``feature_names``; naming in
``predictor_runtime.samples``): agent features by schema name, proxy-local signals, request
features and backend one-hot columns. When the feature snapshot or the model changes, ``bind``
computes once, per backend row of the snapshot, everything that does not change per request
(STYLE.md item 5: cache what can be cached at snapshot build):

* a *base* matrix holding the agent features and the one-hot identity;
* whether those static inputs lie inside the model's training range (the OOD guard's verdict on
  them cannot change until the next snapshot);
* the sample time of each backend's vector, as Python floats.

Per request only a row gather, the few per-request columns and their range checks remain, in
plain Python on scalars: at two candidates that is cheaper than any numpy call (each costs about
a microsecond, several when the proxy's own work has evicted numpy from the cache).

When the model reads no per-endpoint signal (in-flight, EWMA, feature age), a prediction depends
only on the backend's row and the request's features: ``cacheable`` tells the policy it may score
every backend once per (snapshot, request kind) and answer later requests from that table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from predictor_runtime.ood import RangeGuard
from predictor_runtime.samples import LOCAL_FEATURES, REQUEST_FEATURES, backend_feature, request_features

from ..balancer.base import Endpoint, RequestInfo

# columns written per request: the proxy-local signals differ per candidate, the request's own
# features per request (names and order from predictor_runtime.samples, shared with the trainer)
EP_KINDS = LOCAL_FEATURES
REQ_KINDS = REQUEST_FEATURES


@dataclass(frozen=True, slots=True)
class Dynamic:
    col: int
    kind: str  # one of EP_KINDS + REQ_KINDS
    lo: float  # accepted range (the guard's bounds, float32 rounded outward)
    hi: float


@dataclass(frozen=True, slots=True)
class BoundInputs:
    """Column plan for one (model, snapshot) pair."""

    base: np.ndarray  # float32 [n_backends, k], read-only
    row_of: Mapping[str, int]  # backend id -> row in ``base``
    sample_ts: list[float]  # per row: wall time the vector was sampled, NaN if none
    static_ok: list[bool]  # per row: static inputs inside the training range
    static_worst: list[str | None]  # per row: the input furthest outside it (for diagnostics)
    dynamic: tuple[Dynamic, ...]
    cacheable: bool  # no per-endpoint column: predictions depend on (row, request) only
    missing: tuple[str, ...]  # model inputs no source provides (counted, filled with 0)


def bind(
    model_names: Sequence[str],
    guard: RangeGuard,
    snap_names: Sequence[str],
    backend_ids: Sequence[str],
    snap_matrix: np.ndarray,
    sample_ts: np.ndarray,
) -> BoundInputs:
    """Build the per-snapshot plan for a model whose inputs are ``model_names``."""
    names = list(model_names)
    n, k = len(backend_ids), len(names)
    base = np.zeros((n, k), dtype=np.float32)
    snap_index = {name: i for i, name in enumerate(snap_names)}
    model_cols = [j for j, name in enumerate(names) if name in snap_index]
    snap_cols = [snap_index[names[j]] for j in model_cols]
    if model_cols and n:
        base[:, model_cols] = snap_matrix[:, snap_cols]
    for row, bid in enumerate(backend_ids):
        j = names.index(backend_feature(bid)) if backend_feature(bid) in names else -1
        if j >= 0:
            base[row, j] = 1.0
    known = set(snap_index) | set(LOCAL_FEATURES) | set(REQUEST_FEATURES)
    missing = tuple(name for name in names if name not in known and not name.startswith("backend="))
    dynamic = tuple(
        Dynamic(j, name, float(guard.lo[j]), float(guard.hi[j]))
        for j, name in enumerate(names)
        if name in EP_KINDS or name in REQ_KINDS
    )
    static = [j for j in range(k) if names[j] not in EP_KINDS and names[j] not in REQ_KINDS]
    worst: list[str | None] = [None] * n
    if n and static:
        cols = base[:, static]
        inside = (cols >= guard.lo[static]) & (cols <= guard.hi[static])
        ok = inside.all(axis=1)
        for row in np.flatnonzero(~ok):
            worst[int(row)] = guard.worst(base[int(row)])
    else:
        ok = np.ones(n, dtype=bool)
    base.flags.writeable = False
    return BoundInputs(
        base=base,
        row_of={bid: i for i, bid in enumerate(backend_ids)},
        sample_ts=[float(t) for t in np.asarray(sample_ts, dtype=np.float64)],
        static_ok=[bool(v) for v in ok],
        static_worst=worst,
        dynamic=dynamic,
        cacheable=not any(d.kind in EP_KINDS for d in dynamic),
        missing=missing,
    )


class OutOfRange(str):
    """The ``ood`` reason, carrying the input that was out of range (for diagnostics)."""

    feature: str

    def __new__(cls, feature: str) -> OutOfRange:
        self = super().__new__(cls, "ood")
        self.feature = feature
        return self


def rows_for(
    bound: BoundInputs, endpoints: Sequence[Endpoint], wall: float, stale_after_s: float
) -> list[int] | str:
    """Each endpoint's row, or the reason the decision cannot use the model: ``stale`` (no row,
    no vector, or one older than ``stale_after_s``) or ``ood`` (static inputs out of range, as an
    ``OutOfRange`` naming the input)."""
    rows = []
    row_of, sample_ts, static_ok = bound.row_of, bound.sample_ts, bound.static_ok
    for ep in endpoints:
        row = row_of.get(ep.id)
        if row is None or not wall - sample_ts[row] <= stale_after_s:  # NaN (never seen) fails too
            return "stale"
        if not static_ok[row]:
            return OutOfRange(bound.static_worst[row] or "?")
        rows.append(row)
    return rows


def request_values(request: RequestInfo) -> dict[str, float]:
    values = request_features(request.method, request.body_bytes, request.req_class)
    return dict(zip(REQUEST_FEATURES, values, strict=True))


def fill(
    bound: BoundInputs,
    rows: Sequence[int],
    endpoints: Sequence[Endpoint],
    request: RequestInfo,
    now: float,
    wall: float,
    out: np.ndarray,
) -> str | None:
    """Write one row per endpoint into ``out[:len(rows)]``; returns the name of a per-request input
    that lies outside the training range (out-of-distribution), else None.

    ``now`` is the pool's (monotonic) clock for the endpoints' EWMA; ``wall`` is unix time, the
    clock the agents stamp their vectors with.
    """
    n = len(rows)
    out[:n] = bound.base[rows]
    if not bound.dynamic:
        return None
    req = request_values(request)
    for d in bound.dynamic:
        col, kind = d.col, d.kind
        if kind in req:
            value = req[kind]
            if not d.lo <= value <= d.hi:
                return kind
            out[:n, col] = value
            continue
        for i, ep in enumerate(endpoints):
            if kind == "proxy_in_flight":
                value = float(ep.in_flight)
            elif kind == "proxy_ewma_s":
                value = ep.ewma_cost(now)
            else:
                value = wall - bound.sample_ts[rows[i]]
            if not d.lo <= value <= d.hi:  # NaN fails too
                return kind
            out[i, col] = value
    return None


def request_key(request: RequestInfo) -> tuple[int, float, bool]:
    """What a cacheable model's prediction depends on besides the backend."""
    return (request.body_bytes, request.req_class, request.method == "GET")
