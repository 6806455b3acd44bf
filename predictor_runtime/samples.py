"""Training samples: what the proxy saw at dispatch, and the RTT it then observed.

Written by the proxy (``--record FILE`` as JSON lines, or a capped Redis stream), read by
``presage train``. A file is a sequence of records, one JSON object per line:

``{"type": "header", ...}`` opens every file (and follows any restart of the writer)::

    {"type": "header", "v": 1, "feature_names": [...agent schema order...],
     "local_names": ["proxy_in_flight", "proxy_ewma_s", "proxy_feature_age_s"]}

``{"type": "sample", ...}`` one per sampled request::

    {"type": "sample", "ts": 1700000000.1,          # dispatch time, unix seconds
     "id": "req-id", "method": "GET", "req_bytes": 0, "req_class": 256.0,
     "policy": "peak_ewma", "explore": false, "chosen": "b2",
     "rtt_s": 0.0123, "status": 200,               # status 0: no response (connect error/timeout)
     "candidates": [{"backend": "b1", "x": [...] | null, "local": [1, 0.011, 0.3]}, ...]}

``x`` is the candidate's agent feature vector in ``feature_names`` order (``null`` when the proxy had
none), ``local`` the proxy-local signals in ``local_names`` order. Every candidate is recorded, not
only the chosen one, so a model can be judged on what it would have picked.

Model inputs are named; a model's input order is its ``model.json`` ``feature_names``:
agent features by their schema name, the proxy-local signals by ``local_names``, and the request
features ``REQUEST_FEATURES``. ``backend_feature(id)`` is a one-hot column for a global model that
knows backend identity.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

SAMPLES_VERSION = 1
LOCAL_FEATURES: tuple[str, ...] = ("proxy_in_flight", "proxy_ewma_s", "proxy_feature_age_s")
REQUEST_FEATURES: tuple[str, ...] = ("req_bytes", "req_class", "req_is_get")
CLASS_BUCKETS = 1024


def backend_feature(backend_id: str) -> str:
    return f"backend={backend_id}"


def request_features(method: str, req_bytes: float, req_class: float) -> tuple[float, float, float]:
    """The ``REQUEST_FEATURES`` values, in order; the proxy and the trainer both call this."""
    return (float(req_bytes), float(req_class), 1.0 if method.upper() == "GET" else 0.0)


def class_value(raw: str | None) -> float:
    """A request class as a model input: the number itself when numeric, else a stable bucket.

    A numeric class (an image size, a token count) keeps its order, which trees and linear models
    can use; a categorical one is hashed (blake2b, stable across processes unlike ``hash()``).
    """
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw)
        if math.isfinite(value):
            return value
    except ValueError:
        pass
    digest = hashlib.blake2b(raw.encode(), digest_size=4).digest()
    return float(int.from_bytes(digest, "little") % CLASS_BUCKETS)


@dataclass(frozen=True, slots=True)
class Candidate:
    backend: str
    x: tuple[float, ...] | None
    local: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Sample:
    ts: float
    id: str
    method: str
    req_bytes: int
    req_class: float
    policy: str
    explore: bool
    chosen: str
    rtt_s: float
    status: int
    candidates: tuple[Candidate, ...]
    feature_names: tuple[str, ...]
    local_names: tuple[str, ...]

    def chosen_candidate(self) -> Candidate | None:
        return next((c for c in self.candidates if c.backend == self.chosen), None)


def header_record(
    feature_names: Sequence[str], local_names: Sequence[str] = LOCAL_FEATURES
) -> dict[str, Any]:
    return {
        "type": "header",
        "v": SAMPLES_VERSION,
        "feature_names": list(feature_names),
        "local_names": list(local_names),
    }


def sample_record(sample: Sample) -> dict[str, Any]:
    return {
        "type": "sample",
        "ts": sample.ts,
        "id": sample.id,
        "method": sample.method,
        "req_bytes": sample.req_bytes,
        "req_class": sample.req_class,
        "policy": sample.policy,
        "explore": sample.explore,
        "chosen": sample.chosen,
        "rtt_s": sample.rtt_s,
        "status": sample.status,
        "candidates": [
            {"backend": c.backend, "x": None if c.x is None else list(c.x), "local": list(c.local)}
            for c in sample.candidates
        ],
    }


def dumps(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record) + b"\n"


class SampleFormatError(ValueError):
    def __init__(self, line: int, detail: str) -> None:
        super().__init__(f"line {line}: {detail}")
        self.line = line


def read_samples(path: str | Path) -> Iterator[Sample]:
    """Yield samples in file order; a malformed line raises ``SampleFormatError`` naming it."""
    with open(path, "rb") as fh:
        yield from iter_samples(fh)


def iter_samples(fh: IO[bytes]) -> Iterator[Sample]:
    names: tuple[str, ...] | None = None
    local: tuple[str, ...] = LOCAL_FEATURES
    for lineno, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise SampleFormatError(lineno, f"not JSON ({exc})") from None
        kind = rec.get("type") if isinstance(rec, dict) else None
        if kind == "header":
            if rec.get("v") != SAMPLES_VERSION:
                raise SampleFormatError(lineno, f"samples version {rec.get('v')!r}")
            names = tuple(rec["feature_names"])
            local = tuple(rec.get("local_names", LOCAL_FEATURES))
        elif kind == "sample":
            if names is None:
                raise SampleFormatError(lineno, "sample before any header")
            yield _parse_sample(rec, names, local, lineno)
        else:
            raise SampleFormatError(lineno, f"unknown record type {kind!r}")


def _parse_sample(rec: dict[str, Any], names: tuple[str, ...], local: tuple[str, ...], lineno: int) -> Sample:
    try:
        cands = tuple(
            Candidate(
                backend=str(c["backend"]),
                x=None if c.get("x") is None else tuple(float(v) for v in c["x"]),
                local=tuple(float(v) for v in c["local"]),
            )
            for c in rec["candidates"]
        )
        return Sample(
            ts=float(rec["ts"]),
            id=str(rec.get("id", "")),
            method=str(rec.get("method", "GET")),
            req_bytes=int(rec.get("req_bytes", 0)),
            req_class=float(rec.get("req_class", 0.0)),
            policy=str(rec.get("policy", "")),
            explore=bool(rec.get("explore", False)),
            chosen=str(rec["chosen"]),
            rtt_s=float(rec["rtt_s"]),
            status=int(rec["status"]),
            candidates=cands,
            feature_names=names,
            local_names=local,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SampleFormatError(lineno, f"bad sample ({exc!r})") from None
