"""Samples -> a training matrix: one row per sampled request, described as the model will see it.

A row is the *chosen* candidate at dispatch: its agent feature vector (schema names), the
proxy-local signals (``LOCAL_FEATURES``), the request features (``REQUEST_FEATURES``) and a one-hot
column per backend (``backend_feature``); the target is the observed ``rtt_s``.

What is not a target. Rows whose status is 0 (no response: connect error or timeout) or >= 500 are
dropped from the target and counted. Their "RTT" times a failure path — a refused connection or a
shedding backend answers in microseconds — and would teach the model that an overloaded backend is
*fast*, the wrong direction exactly when it matters; failures are the business of health checks
and outlier ejection, not of the RTT model. Timeouts are real latency but indistinguishable here
from connect errors, so they go too. 4xx responses were served and stay.

Splits are by time (earlier train, middle validate, latest test) with strictly increasing
timestamps across them, so no later sample informs an earlier decision.
"""

from __future__ import annotations

import glob
import io
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from predictor_runtime.samples import (
    LOCAL_FEATURES,
    REQUEST_FEATURES,
    Sample,
    SampleFormatError,
    backend_feature,
    iter_samples,
    request_features,
)

DEFAULT_STREAM = "presage:samples"


class TrainInputError(ValueError):
    """Input the pipeline cannot use; the message names the problem (exit code 2)."""


# -- reading ---------------------------------------------------------------------------------------


def expand_sources(specs: Sequence[str]) -> list[str]:
    """File paths (globs and comma lists expanded) or redis URLs, in the order given."""
    out: list[str] = []
    for spec in specs:
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            if part.startswith(("redis://", "rediss://", "unix://")):
                out.append(part)
            elif glob.has_magic(part):
                found = sorted(glob.glob(part))
                if not found:
                    raise TrainInputError(f"no file matches {part!r}")
                out.extend(found)
            else:
                if not Path(part).is_file():
                    raise TrainInputError(f"no such samples file: {part}")
                out.append(part)
    if not out:
        raise TrainInputError("no data source given")
    return out


def read_samples(
    specs: Sequence[str], *, stream: str = DEFAULT_STREAM, last: int | None = None
) -> list[Sample]:
    """Every sample from every source, sorted by time; ``last`` keeps only the newest N."""
    result: list[Sample] = []
    for src in expand_sources(specs):
        result.extend(_read_redis(src, stream, last) if "://" in src else _read_file(src))
    result.sort(key=lambda s: s.ts)
    return result[-last:] if last else result


def _read_file(path: str) -> Iterator[Sample]:
    try:
        with open(path, "rb") as fh:
            yield from iter_samples(fh)
    except SampleFormatError as exc:
        raise TrainInputError(f"{path}: {_explain(path, exc)}") from None
    except OSError as exc:
        raise TrainInputError(f"cannot read {path}: {exc.strerror}") from None


def _explain(path: str, exc: SampleFormatError) -> str:
    """JSON has no NaN: say so plainly when a writer emitted one (Python's json does)."""
    try:
        with open(path, "rb") as fh:
            line = next(line for i, line in enumerate(fh, 1) if i == exc.line)
    except (OSError, StopIteration):
        return str(exc)
    if b"NaN" in line or b"Infinity" in line:
        return f"line {exc.line}: NaN/Infinity value (not valid JSON; samples must be finite)"
    return str(exc)


def _read_redis(url: str, stream: str, last: int | None) -> list[Sample]:
    """Samples from a capped Redis stream (entries ``{"s": line}``, header at ``STREAM:header``)."""
    import redis

    if "#" in url:
        url, stream = url.split("#", 1)
    try:
        client = redis.Redis.from_url(url, socket_timeout=10)
        header: Any = client.get(f"{stream}:header")
        entries: Any = client.xrevrange(stream, count=last) if last else client.xrange(stream)
    except (redis.RedisError, ValueError) as exc:
        raise TrainInputError(f"cannot read stream {stream!r} from {url}: {exc}") from None
    if header is None:
        raise TrainInputError(f"no header at {stream}:header in {url} (has the proxy recorded there?)")
    if last:
        entries.reverse()
    lines = [header.rstrip(b"\n")] + [fields[b"s"] for _, fields in entries if b"s" in fields]
    try:
        return list(iter_samples(io.BytesIO(b"\n".join(lines))))
    except SampleFormatError as exc:
        raise TrainInputError(f"{url} stream {stream}: entry {exc.line - 1}: {exc}") from None


# -- the matrix ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dataset:
    x: np.ndarray  # float32 [n, k]: every column, named by ``names``
    names: tuple[str, ...]
    y: np.ndarray  # float64 [n] observed RTT seconds
    ts: np.ndarray  # float64 [n] dispatch time, ascending
    backend: np.ndarray  # object [n] chosen backend id
    explore: np.ndarray  # bool [n]
    backends: tuple[str, ...]
    n_read: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: np.ndarray) -> Dataset:
        return Dataset(
            self.x[idx], self.names, self.y[idx], self.ts[idx], self.backend[idx], self.explore[idx],
            self.backends, self.n_read, self.dropped,
        )  # fmt: skip

    def columns(self, names: Sequence[str]) -> np.ndarray:
        """The columns ``names`` (a model's input order); a backend never seen is all zeros."""
        index = {n: i for i, n in enumerate(self.names)}
        out = np.zeros((len(self), len(names)), dtype=np.float32)
        for j, name in enumerate(names):
            i = index.get(name)
            if i is not None:
                out[:, j] = self.x[:, i]
            elif not name.startswith("backend="):
                raise TrainInputError(f"column {name!r} is not in the data")
        return out


class _Rows:
    """Accumulates chosen-candidate rows, mapping each header's names onto the first header's."""

    def __init__(self) -> None:
        self.agent: tuple[str, ...] | None = None
        self._maps: dict[int, tuple[tuple[str, ...], np.ndarray | None]] = {}
        self.rows: list[np.ndarray] = []
        self.y: list[float] = []
        self.ts: list[float] = []
        self.backend: list[str] = []
        self.explore: list[bool] = []

    def _agent_map(self, s: Sample) -> np.ndarray | None:
        """Column gather for this sample's header (None: same order as the first header)."""
        if self.agent is None:
            self.agent = s.feature_names
        hit = self._maps.get(id(s.feature_names))
        if hit is not None and hit[0] is s.feature_names:
            return hit[1]
        gather: np.ndarray | None = None
        if s.feature_names != self.agent:
            pos = {n: i for i, n in enumerate(s.feature_names)}
            missing = [n for n in self.agent if n not in pos]
            if missing:
                raise TrainInputError(f"missing columns in a later header: {', '.join(missing[:5])}")
            gather = np.array([pos[n] for n in self.agent])
        self._maps[id(s.feature_names)] = (s.feature_names, gather)
        return gather

    def add(self, s: Sample, x: Sequence[float], local: Sequence[float]) -> None:
        gather = self._agent_map(s)
        if len(x) != len(s.feature_names):
            raise TrainInputError(
                f"missing columns: sample {s.id!r} (ts {s.ts}) has {len(x)} feature values, "
                f"its header names {len(s.feature_names)}"
            )
        if len(local) != len(s.local_names):
            raise TrainInputError(f"missing columns: sample {s.id!r} has {len(local)} local signals")
        agent = np.asarray(x, dtype=np.float32)
        if gather is not None:
            agent = agent[gather]
        loc = dict(zip(s.local_names, local, strict=True))
        try:
            local_row = [loc[n] for n in LOCAL_FEATURES]
        except KeyError as exc:
            raise TrainInputError(f"missing columns: local signal {exc.args[0]!r} not recorded") from None
        req = request_features(s.method, s.req_bytes, s.req_class)
        self.rows.append(np.concatenate([agent, np.asarray(local_row + list(req), dtype=np.float32)]))
        self.y.append(s.rtt_s)
        self.ts.append(s.ts)
        self.backend.append(s.chosen)
        self.explore.append(s.explore)


def _drop_reason(s: Sample) -> str | None:
    if s.status == 0:
        return "status 0 (no response)"
    if s.status >= 500:
        return "status >= 500"
    if math.isfinite(s.rtt_s) and s.rtt_s <= 0:
        return "rtt_s <= 0"
    return None


def build_dataset(samples: Iterable[Sample], *, min_samples: int = 200) -> Dataset:
    """Turn samples into a ``Dataset``; bad input raises ``TrainInputError`` naming the problem."""
    rows = _Rows()
    dropped: dict[str, int] = {}
    n_read = 0
    for s in samples:
        n_read += 1
        reason = _drop_reason(s)
        cand = s.chosen_candidate() if reason is None else None
        if reason is None and cand is None:
            reason = "chosen backend not among candidates"
        elif cand is not None and cand.x is None:
            reason = "no feature vector for the chosen backend"
        if reason is not None:
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        assert cand is not None and cand.x is not None
        rows.add(s, cand.x, cand.local)
    if n_read == 0:
        raise TrainInputError("too few samples: the data holds none")
    if len(rows.y) < min_samples:
        raise TrainInputError(
            f"too few samples: {len(rows.y)} usable of {n_read} read (need at least {min_samples}; "
            f"dropped: {_fmt_dropped(dropped)})"
        )
    return _assemble(rows, n_read, dropped)


def _fmt_dropped(dropped: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(dropped.items())) or "none"


def _assemble(rows: _Rows, n_read: int, dropped: dict[str, int]) -> Dataset:
    assert rows.agent is not None
    base = np.vstack(rows.rows)
    backend = np.array(rows.backend, dtype=object)
    backends = tuple(sorted(set(rows.backend)))
    if len(backends) < 2:
        raise TrainInputError(
            f"a single backend ({backends[0]}) in the data: a routing model needs at least two"
        )
    onehot = np.stack([(backend == b) for b in backends], axis=1).astype(np.float32)
    names = rows.agent + LOCAL_FEATURES + REQUEST_FEATURES + tuple(backend_feature(b) for b in backends)
    x = np.hstack([base, onehot])
    y = np.asarray(rows.y, dtype=np.float64)
    _check_finite(x, y, names, rows.ts)
    ts = np.asarray(rows.ts, dtype=np.float64)
    order = np.argsort(ts, kind="stable")
    return Dataset(
        x[order], names, y[order], ts[order], backend[order], np.asarray(rows.explore)[order],
        backends, n_read, dropped,
    )  # fmt: skip


def _check_finite(x: np.ndarray, y: np.ndarray, names: Sequence[str], ts: Sequence[float]) -> None:
    bad_y = ~np.isfinite(y)
    if bad_y.any():
        i = int(np.argmax(bad_y))
        raise TrainInputError(f"NaN/inf rtt_s in {int(bad_y.sum())} samples (first at ts {ts[i]})")
    bad = ~np.isfinite(x)
    if bad.any():
        col = int(np.argmax(bad.any(axis=0)))
        row = int(np.argmax(bad[:, col]))
        raise TrainInputError(
            f"NaN/inf feature values in {int(bad.any(axis=1).sum())} samples "
            f"(first: column {names[col]!r} at ts {ts[row]})"
        )


# -- time split ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Split:
    train: np.ndarray  # indices, earliest
    val: np.ndarray
    test: np.ndarray  # latest


def time_split(ts: np.ndarray, fractions: tuple[float, float] = (0.6, 0.2)) -> Split:
    """Earlier ``fractions[0]`` trains, the next ``fractions[1]`` validates, the rest tests.

    Boundaries are timestamps, and ties go to the earlier split, so every validation timestamp is
    strictly after every training one and every test timestamp strictly after both.
    """
    n = len(ts)
    order = np.argsort(ts, kind="stable")
    sorted_ts = ts[order]
    a = max(1, int(n * fractions[0]))
    b = max(a + 1, int(n * (fractions[0] + fractions[1])))
    t1, t2 = sorted_ts[a - 1], sorted_ts[min(b, n) - 1]
    train = np.flatnonzero(ts <= t1)
    val = np.flatnonzero((ts > t1) & (ts <= t2))
    test = np.flatnonzero(ts > t2)
    if min(len(train), len(val), len(test)) == 0:
        raise TrainInputError(
            f"too few distinct timestamps to split by time (train {len(train)}, "
            f"validate {len(val)}, test {len(test)})"
        )
    return Split(train, val, test)
