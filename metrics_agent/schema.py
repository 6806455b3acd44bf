"""The feature-vector wire format shared by the agent (writer) and the proxy (reader).

One vector per backend lives at ``{prefix}fv:{backend_id}`` with a TTL, so a dead agent shows up
as a missing (stale) vector, never as a healthy idle one. Each push also publishes the backend id
on ``{prefix}fv-updates`` and appends the vector to a capped stream ``{prefix}fvh:{backend_id}``
(training history).

A vector is a JSON object (orjson), dense and ordered::

    {"v": 1, "backend": "b1", "seq": 42, "ts": 1700000000.25,
     "windows": [5, 20, 60], "values": [...], "missing": ["gpu_util", ...]}

``values`` follows ``feature_names(windows)``: for every base metric its last value, then for every
window W the mean, max and slope (units per second, least squares) over the last W seconds. Metrics
the machine does not have are sent as 0.0 and named in ``missing`` (the training pipeline drops
constant columns, so they never reach a model). Non-finite values are never sent: the proxy rejects
a vector that carries one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import orjson

SCHEMA_VERSION = 1
DEFAULT_PREFIX = "presage:"
DEFAULT_WINDOWS: tuple[int, ...] = (5, 20, 60)
AGGREGATES: tuple[str, ...] = ("mean", "max", "slope")

# Base metrics in wire order. Grouped by source; names are stable API (models refer to them).
HOST_METRICS: tuple[str, ...] = (
    "host_cpu_util",  # fraction of all cores busy, 0..1
    "host_load1_per_core",
    "host_ctx_switches_per_s",
    "host_mem_used_frac",
    "host_net_bytes_per_s",
    "host_disk_io_bytes_per_s",
    "host_psi_cpu_some_avg10",  # /proc/pressure/cpu "some avg10", percent
    "host_psi_mem_some_avg10",
    "host_psi_io_some_avg10",
)
PROCESS_METRICS: tuple[str, ...] = (
    "proc_cpu_util",  # CPU seconds per second of the process and its children
    "proc_rss_bytes",
    "proc_threads",
    "proc_open_files",
)
CGROUP_METRICS: tuple[str, ...] = (
    "cg_cpu_util",  # CPU seconds per second used by the cgroup
    "cg_cpu_quota_cores",  # quota / period, 0 when unlimited
    "cg_throttled_periods_per_s",
    "cg_throttled_seconds_per_s",
    "cg_mem_used_bytes",
    "cg_mem_limit_frac",
    "cg_psi_cpu_some_avg10",
    "cg_psi_mem_some_avg10",
    "cg_psi_io_some_avg10",
)
GPU_METRICS: tuple[str, ...] = ("gpu_util", "gpu_mem_used_frac")
APP_METRICS: tuple[str, ...] = (
    "app_in_flight",  # requests being served, scraped from the backend's /metrics
    "app_queue_length",  # requests waiting for a worker
    "app_workers",  # size of the backend's worker pool
)
BASE_METRICS: tuple[str, ...] = HOST_METRICS + PROCESS_METRICS + CGROUP_METRICS + GPU_METRICS + APP_METRICS


class SchemaError(ValueError):
    """A vector that cannot be used. ``reason`` is a short, bounded label for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@lru_cache(maxsize=16)
def feature_names(windows: tuple[int, ...] = DEFAULT_WINDOWS) -> tuple[str, ...]:
    """Column order of ``values``: ``metric`` (last), then ``metric.mean_5s``, ``.max_5s``, ..."""
    names: list[str] = []
    for metric in BASE_METRICS:
        names.append(metric)
        for w in windows:
            names.extend(f"{metric}.{agg}_{w}s" for agg in AGGREGATES)
    return tuple(names)


def vector_key(backend_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}fv:{backend_id}"


def history_key(backend_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}fvh:{backend_id}"


def updates_channel(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}fv-updates"


@dataclass(frozen=True, slots=True)
class FeatureVector:
    backend: str
    seq: int
    ts: float  # unix time the sample was taken (not when it was pushed)
    windows: tuple[int, ...]
    values: tuple[float, ...]
    missing: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        expected = len(feature_names(self.windows))
        if len(self.values) != expected:
            raise SchemaError("length", f"{len(self.values)} values, schema has {expected}")
        if not all(math.isfinite(v) for v in self.values):
            raise SchemaError("non_finite", "a value is NaN or infinite")

    def as_dict(self) -> dict[str, float]:
        return dict(zip(feature_names(self.windows), self.values, strict=True))


def encode(vec: FeatureVector) -> bytes:
    return orjson.dumps(
        {
            "v": SCHEMA_VERSION,
            "backend": vec.backend,
            "seq": vec.seq,
            "ts": vec.ts,
            "windows": list(vec.windows),
            "values": list(vec.values),
            "missing": list(vec.missing),
        }
    )


def decode(raw: bytes | str) -> FeatureVector:
    """Parse one vector; every failure is a ``SchemaError`` with a bounded ``reason``."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SchemaError("undecodable", str(exc)) from None
    if not isinstance(obj, dict):
        raise SchemaError("undecodable", "not a JSON object")
    if obj.get("v") != SCHEMA_VERSION:
        raise SchemaError("version", f"schema version {obj.get('v')!r}, expected {SCHEMA_VERSION}")
    try:
        values = obj["values"]
        windows = tuple(int(w) for w in obj["windows"])
        if not isinstance(values, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        ):
            raise SchemaError("type", "values must be a list of numbers")
        return FeatureVector(
            backend=str(obj["backend"]),
            seq=int(obj["seq"]),
            ts=float(obj["ts"]),
            windows=windows,
            values=tuple(float(v) for v in values),
            missing=tuple(str(m) for m in obj.get("missing", ())),
        )
    except KeyError as exc:
        raise SchemaError("field", f"missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, SchemaError):
            raise
        raise SchemaError("type", str(exc)) from None


def check_windows(windows: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(w) for w in windows)
    if not out or any(w <= 0 for w in out) or len(set(out)) != len(out):
        raise ValueError(f"windows must be distinct positive seconds, got {list(windows)}")
    return out
