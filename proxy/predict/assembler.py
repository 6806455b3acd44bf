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

Prediction tables. When the only per-endpoint signal a model reads is this worker's in-flight
count (a small integer), a prediction depends on the backend's row, the request's kind and that
count alone, and can be kept exactly: ``levels`` (K) tells the policy it may keep, per snapshot and
request kind, each row's predictions at in-flight 0..K-1, filled as decisions score them, and answer
later decisions from them. K covers every count the range guard accepts, capped at ``MAX_LEVELS``;
a count beyond the cap is scored directly. A model that reads no per-endpoint signal has K = 1.
The continuous signals (``proxy_ewma_s``, ``proxy_feature_age_s``) change with every completion and
every decision: a table over them would have to quantise them, i.e. predict for an input the model
was not given, and could choose differently from the model (a tree ensemble splits peak-EWMA at
thousands of thresholds), so models that read them are scored directly (K = 0).
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
IN_FLIGHT = "proxy_in_flight"
MAX_LEVELS = 64  # in-flight counts kept per table row


@dataclass(frozen=True, slots=True)
class Dynamic:
    col: int
    kind: str  # one of EP_KINDS + REQ_KINDS
    lo: float  # accepted range (the guard's bounds, float32 rounded outward)
    hi: float
    slot: int = -1  # a request input's position in REQUEST_FEATURES


@dataclass(frozen=True, slots=True)
class Layout:
    """What a plan needs that depends only on the model and the snapshot's shape (its feature
    names and backend ids), not on the values: built once and reused by every snapshot of the same
    shape (the feature store keeps both tuples across snapshots), so that binding a new snapshot is
    array work, not Python over every backend and every name."""

    model_names: tuple[str, ...]
    snap_names: Sequence[str]
    backend_ids: Sequence[str]
    model_cols: np.ndarray  # model columns filled from the snapshot ...
    snap_cols: np.ndarray  # ... and the snapshot columns they come from
    onehot_rows: np.ndarray  # (row, column) of each backend's one-hot identity input
    onehot_cols: np.ndarray
    static: np.ndarray  # model columns fixed per snapshot (everything but the dynamic ones)
    row_of: Mapping[str, int]
    dynamic: tuple[Dynamic, ...]
    per_request: tuple[Dynamic, ...]
    per_endpoint: tuple[Dynamic, ...]
    levels: int
    in_flight: Dynamic | None
    missing: tuple[str, ...]

    def fits(self, model_names: Sequence[str], snap_names: Sequence[str], backend_ids: Sequence[str]) -> bool:
        """Whether this layout serves a snapshot of these names and ids for this model."""
        return (
            (self.snap_names is snap_names or self.snap_names == snap_names)
            and (self.backend_ids is backend_ids or self.backend_ids == backend_ids)
            and (self.model_names is model_names or self.model_names == tuple(model_names))
        )


@dataclass(frozen=True, slots=True)
class BoundInputs:
    """Column plan for one (model, snapshot) pair."""

    base: np.ndarray  # float32 [n_backends, k], read-only
    row_of: Mapping[str, int]  # backend id -> row in ``base``
    sample_ts: list[float]  # per row: wall time the vector was sampled, NaN if none
    static_ok: list[bool]  # per row: static inputs inside the training range
    static_worst: list[str | None]  # per row: the input furthest outside it (for diagnostics)
    dynamic: tuple[Dynamic, ...]
    per_request: tuple[Dynamic, ...]  # the request's own features (same value in every row)
    per_endpoint: tuple[Dynamic, ...]  # proxy-local signals (one value per candidate)
    # in-flight counts tabulated per row (see the module docstring): 0 when the model reads a
    # continuous per-endpoint signal, 1 when it reads none, else up to MAX_LEVELS
    levels: int
    in_flight: Dynamic | None  # the in-flight column, when the model reads it
    missing: tuple[str, ...]  # model inputs no source provides (counted, filled with 0)
    layout: Layout | None = None  # what it was built from (``bind(layout=...)`` reuses it)


def layout_for(
    model_names: Sequence[str], guard: RangeGuard, snap_names: Sequence[str], backend_ids: Sequence[str]
) -> Layout:
    """The value-independent part of a plan (see ``Layout``)."""
    names = tuple(model_names)
    k = len(names)
    col_of = {name: j for j, name in enumerate(names)}
    snap_index = {name: i for i, name in enumerate(snap_names)}
    model_cols = [j for j, name in enumerate(names) if name in snap_index]
    onehot = [(row, col_of[backend_feature(bid)]) for row, bid in enumerate(backend_ids)
              if backend_feature(bid) in col_of]  # fmt: skip
    known = set(snap_index) | set(LOCAL_FEATURES) | set(REQUEST_FEATURES)
    static = [j for j in range(k) if names[j] not in EP_KINDS and names[j] not in REQ_KINDS]
    dynamic = tuple(
        Dynamic(
            j,
            name,
            float(guard.lo[j]),
            float(guard.hi[j]),
            REQ_KINDS.index(name) if name in REQ_KINDS else -1,
        )
        for j, name in enumerate(names)
        if name in EP_KINDS or name in REQ_KINDS
    )
    return Layout(
        model_names=names,
        snap_names=snap_names,
        backend_ids=backend_ids,
        model_cols=np.array(model_cols, dtype=np.intp),
        snap_cols=np.array([snap_index[names[j]] for j in model_cols], dtype=np.intp),
        onehot_rows=np.array([r for r, _ in onehot], dtype=np.intp),
        onehot_cols=np.array([c for _, c in onehot], dtype=np.intp),
        static=np.array(static, dtype=np.intp),
        row_of={bid: i for i, bid in enumerate(backend_ids)},
        dynamic=dynamic,
        per_request=tuple(d for d in dynamic if d.kind in REQ_KINDS),
        per_endpoint=tuple(d for d in dynamic if d.kind in EP_KINDS),
        levels=_levels(dynamic),
        in_flight=next((d for d in dynamic if d.kind == IN_FLIGHT), None),
        missing=tuple(name for name in names if name not in known and not name.startswith("backend=")),
    )


def bind(
    model_names: Sequence[str],
    guard: RangeGuard,
    snap_names: Sequence[str],
    backend_ids: Sequence[str],
    snap_matrix: np.ndarray,
    sample_ts: np.ndarray,
    *,
    layout: Layout | None = None,
) -> BoundInputs:
    """Build the per-snapshot plan for a model whose inputs are ``model_names``; ``layout`` (from
    an earlier plan of the same model and snapshot shape) saves rebuilding what does not change."""
    if layout is None or not layout.fits(model_names, snap_names, backend_ids):
        layout = layout_for(model_names, guard, snap_names, backend_ids)
    n, k = len(backend_ids), len(layout.model_names)
    base = np.zeros((n, k), dtype=np.float32)
    if len(layout.model_cols) and n:
        base[:, layout.model_cols] = snap_matrix[:, layout.snap_cols]
    if len(layout.onehot_rows):
        base[layout.onehot_rows, layout.onehot_cols] = 1.0
    static = layout.static
    worst: list[str | None] = [None] * n
    if n and len(static):
        cols = base[:, static]
        ok = ((cols >= guard.lo[static]) & (cols <= guard.hi[static])).all(axis=1)
        for row in np.flatnonzero(~ok):
            worst[int(row)] = guard.worst(base[int(row)])
    else:
        ok = np.ones(n, dtype=bool)
    base.flags.writeable = False
    return BoundInputs(
        base=base,
        row_of=layout.row_of,
        sample_ts=np.asarray(sample_ts, dtype=np.float64).tolist(),
        static_ok=ok.tolist(),
        static_worst=worst,
        dynamic=layout.dynamic,
        per_request=layout.per_request,
        per_endpoint=layout.per_endpoint,
        levels=layout.levels,
        in_flight=layout.in_flight,
        missing=layout.missing,
        layout=layout,
    )


def _levels(dynamic: Sequence[Dynamic]) -> int:
    per_endpoint = [d for d in dynamic if d.kind in EP_KINDS]
    if not per_endpoint:
        return 1
    if len(per_endpoint) > 1 or per_endpoint[0].kind != IN_FLIGHT:
        return 0
    hi = per_endpoint[0].hi  # counts above it are out of range, never looked up
    return max(1, min(MAX_LEVELS, int(min(hi, MAX_LEVELS)) + 1))


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


SMALL_GATHER = 8  # up to this many rows a Python row loop copies faster than np.take (2 vs 3 us at 3)


def _gather(base: np.ndarray, rows: Sequence[int], out: np.ndarray) -> None:
    if len(rows) <= SMALL_GATHER:
        for i, row in enumerate(rows):
            out[i] = base[row]
    else:
        np.take(base, rows, axis=0, out=out[: len(rows)])


def _request_columns(bound: BoundInputs, request: RequestInfo, out: np.ndarray) -> str | None:
    """Write the request's own features into every row of ``out``; the name of one outside the
    training range, else None."""
    if not bound.per_request:
        return None
    values = request_features(request.method, request.body_bytes, request.req_class)
    for d in bound.per_request:
        value = values[d.slot]
        if not d.lo <= value <= d.hi:
            return d.kind
        out[:, d.col] = value
    return None


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
    _gather(bound.base, rows, out)
    if not bound.dynamic:
        return None
    outside = _request_columns(bound, request, out[:n])
    if outside is not None:
        return outside
    for d in bound.per_endpoint:
        col, kind, lo, hi = d.col, d.kind, d.lo, d.hi
        for i, ep in enumerate(endpoints):
            if kind == IN_FLIGHT:
                value = float(ep.in_flight)
            elif kind == "proxy_ewma_s":
                value = ep.ewma_cost(now)
            else:
                value = wall - bound.sample_ts[rows[i]]
            if not lo <= value <= hi:  # NaN fails too
                return kind
            out[i, col] = value
    return None


def unchanged_rows(old: BoundInputs, new: BoundInputs) -> list[int]:
    """Per row of ``new``, the row of ``old`` holding the same backend with identical static
    inputs (so every prediction tabulated for it still holds), or -1."""
    if old.row_of is new.row_of:  # the same backends in the same rows: compare row by row
        equal = (new.base == old.base).all(axis=1)
        return np.where(equal, np.arange(len(equal)), -1).tolist()  # type: ignore[no-any-return]
    src = [old.row_of.get(bid, -1) for bid in new.row_of]
    pairs = [(i, j) for i, j in enumerate(src) if j >= 0]
    if not pairs:
        return [-1] * len(src)
    rows_new, rows_old = zip(*pairs, strict=True)
    equal = (new.base[list(rows_new)] == old.base[list(rows_old)]).all(axis=1)
    for (i, _), ok in zip(pairs, equal.tolist(), strict=True):
        if not ok:
            src[i] = -1
    return src


def request_key(bound: BoundInputs, request: RequestInfo) -> tuple[float, ...]:
    """What a tabulated prediction depends on besides the backend row and the in-flight count: the
    values of the request inputs the model reads (in ``bound.per_request`` order), and nothing it
    ignores, so that a model blind to body size keeps one table for every upload size."""
    if not bound.per_request:
        return ()
    values = request_features(request.method, request.body_bytes, request.req_class)
    return tuple([values[d.slot] for d in bound.per_request])


def kind_rows(bound: BoundInputs, key: tuple[float, ...], cells: Sequence[tuple[int, int]]) -> np.ndarray:
    """The model input for table cells of one request kind: per ``(row, in_flight)`` the row's
    static inputs, the kind's request inputs (``key``, as ``request_key`` made it) and that count.
    Every value must already be inside the training range (the caller checks)."""
    x = bound.base[[row for row, _ in cells]]  # a copy: fancy indexing
    for d, value in zip(bound.per_request, key, strict=True):
        x[:, d.col] = value
    if bound.in_flight is not None:
        x[:, bound.in_flight.col] = [n for _, n in cells]
    return x
