"""The testbed's hidden state as the oracle reads it: capacities, the interference schedule, sizes.

``Testbed.write_hidden_state(path)`` writes it (JSON); nothing in the proxy can see it, which is
the point: the oracle balancer (``oracle.py``) routes with knowledge no real balancer has, so its
figures bound what any prediction can win on the same run.

Capacity model (one backend). A backend runs ``workers`` requests at once; each request costs
``work_s(size) * work_mult`` CPU-seconds. A CPU quota of ``q`` cores shared by ``w`` busy workers
gives each of them ``min(1, q / w)`` of a core. A noisy-neighbour episode multiplies the speed by
its ``capacity_factor`` while it lasts (the testbed may state the factor; otherwise ``slowdown``
estimates it from the episode's kind and stress workers, see there), and a network-delay episode
adds its delay to every request.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class HiddenStateError(ValueError):
    """The hidden-state file is missing, unreadable or malformed; the message names the key."""


@dataclass(frozen=True, slots=True)
class BackendCapacity:
    id: str
    workers: int
    cpu_quota_cores: float | None  # None: no quota (the worker count is the only bound)
    work_mult: float  # > 1: a slower machine (each request costs that much more CPU)
    delay_s: float = 0.0  # fixed extra network delay (netem), both directions together

    @property
    def per_worker_speed(self) -> float:
        """Share of a core each busy worker gets: ``min(1, quota / workers)``."""
        if self.cpu_quota_cores is None:
            return 1.0
        return min(1.0, self.cpu_quota_cores / self.workers)


@dataclass(frozen=True, slots=True)
class Episode:
    backend: str
    start_wall: float
    end_wall: float
    kind: str
    workers: int
    capacity_factor: float  # multiplies the backend's speed while the episode lasts (0 < f <= 1)
    delay_s: float = 0.0  # extra network delay while the episode lasts


@dataclass(frozen=True, slots=True)
class HiddenState:
    backends: Mapping[str, BackendCapacity]
    episodes: tuple[Episode, ...]
    size_work_s: Mapping[float, float]  # request size -> CPU-seconds at work_mult 1 on a full core

    def work_s(self, size: float) -> float:
        """CPU-seconds of a request of ``size``; an unknown size interpolates linearly (log-log)."""
        exact = self.size_work_s.get(size)
        if exact is not None:
            return exact
        sizes = sorted(self.size_work_s)
        if size <= 0 or not sizes:
            return self.mean_work_s()
        i = bisect.bisect_left(sizes, size)
        lo, hi = sizes[max(0, min(i - 1, len(sizes) - 2))], sizes[min(max(i, 1), len(sizes) - 1)]
        if lo == hi:
            return self.size_work_s[lo]
        # work grows as a power of the size (size^2 log size for a 2-D FFT): interpolate in log-log
        t = (math.log(size) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return math.exp(math.log(self.size_work_s[lo]) * (1 - t) + math.log(self.size_work_s[hi]) * t)

    def mean_work_s(self) -> float:
        values = list(self.size_work_s.values())
        return sum(values) / len(values) if values else 0.0

    def active(self, backend: str, wall: float) -> list[Episode]:
        return [e for e in self.episodes if e.backend == backend and e.start_wall <= wall < e.end_wall]


# Fallback slowdowns when the testbed does not state an episode's capacity factor. A CPU hog with
# ``k`` stress workers competing with ``w`` backend workers for the same cores leaves the backend
# about ``w / (w + k)`` of them (the fair share of the CFS scheduler). Cache and memory-bandwidth
# hogs do not take cores but stretch every memory-bound step: the ETH memcached/PARSEC study (and
# iBench, Delimitrou & Kozyrakis 2013) measured 1.3-2x slowdowns; I/O hogs barely touch an
# in-memory FFT service.
MEMORY_KINDS = {"cache": 0.6, "memory": 0.6, "vm": 0.6, "membw": 0.6, "io": 0.9, "hdd": 0.9}


def slowdown(kind: str, stress_workers: int, backend_workers: int) -> float:
    """Estimated speed factor (0 < f <= 1) of a backend during an episode of ``kind``."""
    if kind in ("delay", "netem", "network"):
        return 1.0
    if kind in MEMORY_KINDS:
        return MEMORY_KINDS[kind]
    k = max(stress_workers, 1)
    return backend_workers / (backend_workers + k)


def load_hidden_state(path: str | Path) -> HiddenState:
    """Read and check the JSON at ``path``; ``HiddenStateError`` names what is wrong."""
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise HiddenStateError(f"hidden state {path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise HiddenStateError(f"hidden state {path}: not JSON: {exc}") from None
    return parse_hidden_state(raw)


def parse_hidden_state(raw: Any) -> HiddenState:
    if not isinstance(raw, Mapping):
        raise HiddenStateError("hidden state: the top level must be an object")
    backends = {b.id: b for b in (_backend(item, key) for key, item in _items(raw, "backends"))}
    episodes = tuple(_episode(item, f"episodes[{i}]", backends) for i, item in _list(raw, "episodes"))
    sizes = _require(raw, "size_work_s", "hidden state")
    if not isinstance(sizes, Mapping) or not sizes:
        raise HiddenStateError("size_work_s: must be a non-empty object {size: seconds}")
    size_work = {
        _float(k, f"size_work_s key {k!r}"): _positive(v, f"size_work_s[{k}]") for k, v in sizes.items()
    }
    return HiddenState(backends, episodes, size_work)


def _items(raw: Mapping[str, Any], key: str) -> list[tuple[str, Any]]:
    """``backends`` as an object {id: {...}} or a list of objects with ``id``."""
    value = _require(raw, key, "hidden state")
    if isinstance(value, Mapping):
        return [(str(k), {"id": str(k), **v} if isinstance(v, Mapping) else v) for k, v in value.items()]
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [(f"{key}[{i}]", item) for i, item in enumerate(value)]
    raise HiddenStateError(f"{key}: must be an object or a list")


def _list(raw: Mapping[str, Any], key: str) -> list[tuple[int, Any]]:
    value = raw.get(key, [])
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise HiddenStateError(f"{key}: must be a list")
    return list(enumerate(value))


def _backend(item: Any, where: str) -> BackendCapacity:
    if not isinstance(item, Mapping):
        raise HiddenStateError(f"{where}: must be an object")
    quota = item.get("cpu_quota_cores")
    workers = int(_positive(_require(item, "workers", where), f"{where}.workers"))
    return BackendCapacity(
        id=str(_require(item, "id", where)),
        workers=workers,
        cpu_quota_cores=None if quota in (None, 0) else _positive(quota, f"{where}.cpu_quota_cores"),
        work_mult=_positive(item.get("work_mult", 1.0), f"{where}.work_mult"),
        delay_s=_non_negative(item.get("delay_ms", 0.0), f"{where}.delay_ms") / 1000.0,
    )


def _episode(item: Any, where: str, backends: Mapping[str, BackendCapacity]) -> Episode:
    if not isinstance(item, Mapping):
        raise HiddenStateError(f"{where}: must be an object")
    backend = str(_require(item, "backend", where))
    if backend not in backends:
        raise HiddenStateError(f"{where}.backend: unknown backend {backend!r}")
    start = _float(_require(item, "start_wall", where), f"{where}.start_wall")
    end = _float(_require(item, "end_wall", where), f"{where}.end_wall")
    if end < start:
        raise HiddenStateError(f"{where}: end_wall is before start_wall")
    kind = str(item.get("kind", "cpu"))
    workers = int(_non_negative(item.get("workers", 1), f"{where}.workers"))
    factor = item.get("capacity_factor")
    if factor is None:
        factor = slowdown(kind, workers, backends[backend].workers)
    factor = _positive(factor, f"{where}.capacity_factor")
    if factor > 1.0:
        raise HiddenStateError(f"{where}.capacity_factor: must be <= 1, got {factor}")
    delay = _non_negative(item.get("delay_ms", 0.0), f"{where}.delay_ms") / 1000.0
    return Episode(backend, start, end, kind, workers, factor, delay)


def _require(raw: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in raw:
        raise HiddenStateError(f"{where}: missing key {key!r}")
    return raw[key]


def _float(value: Any, where: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise HiddenStateError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(out):
        raise HiddenStateError(f"{where}: expected a finite number, got {value!r}")
    return out


def _positive(value: Any, where: str) -> float:
    out = _float(value, where)
    if out <= 0:
        raise HiddenStateError(f"{where}: must be > 0, got {value!r}")
    return out


def _non_negative(value: Any, where: str) -> float:
    out = _float(value, where)
    if out < 0:
        raise HiddenStateError(f"{where}: must be >= 0, got {value!r}")
    return out
