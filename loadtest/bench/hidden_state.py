"""The testbed's hidden state as the oracle reads it: capacities, the interference schedule, sizes.

``Testbed.write_hidden_state(path)`` writes it (JSON); nothing in the proxy can see it, which is
the point: the oracle balancer (``oracle.py``) routes with knowledge no real balancer has, so its
figures bound what any prediction can win on the same run.

Capacity model (one backend). A backend runs ``workers`` requests at once on ``cores`` cores (its
CFS quota, the CPUs it is pinned to, or its worker count, whichever is least: the testbed states
it); each request costs ``work_s(size) * work_mult`` CPU-seconds. The CFS scheduler shares the
cores equally among runnable threads, so with ``busy`` request threads and ``k`` noisy-neighbour
threads in the same group each request thread runs at ``min(1, cores / (busy + k))`` of a core.
A noisy neighbour therefore *competes* with ``competing`` threads (a stress-ng CPU, cache or
STREAM worker is always runnable; an HDD worker waits on I/O about half the time) and may also
stretch every step by a ``penalty`` factor (cache and memory-bandwidth hogs evict the working set:
the iBench classes of Delimitrou & Kozyrakis, IISWC 2013, and the ETH memcached/PARSEC study
measured such slowdowns). A testbed that knows better can state ``capacity_factor`` (the penalty)
and ``competing`` per episode. A network-delay episode adds ``delay_ms`` to every request.
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
    cores: float  # cores the backend's threads can use together (quota, pinning, workers)
    work_mult: float  # > 1: a slower machine (each request costs that much more CPU)
    delay_s: float = 0.0  # fixed extra delay per request
    quota_cores: float | None = None  # a CFS bandwidth quota (throttling happens), None without cgroups
    overhead_s: float = 0.0  # CPU-seconds per request beyond its numpy work (HTTP, hand-offs), measured


@dataclass(frozen=True, slots=True)
class Episode:
    backend: str
    start_wall: float
    end_wall: float
    kind: str
    workers: int
    competing: float  # runnable threads it adds beside the backend's (CFS shares the cores with them)
    penalty: float  # multiplies the speed of every backend thread while it lasts (0 < p <= 1)
    delay_s: float = 0.0  # extra network delay while it lasts


@dataclass(frozen=True, slots=True)
class HiddenState:
    backends: Mapping[str, BackendCapacity]
    episodes: tuple[Episode, ...]
    size_work_s: Mapping[float, float]  # request size -> CPU-seconds at work_mult 1 on a full core
    size_shares: Mapping[float, float] | None = None  # the size mix, for the mean work of a queued request
    cpu_period_s: float = 0.1  # the CFS period of the backends' quotas (the scenario's cpu_period_ms)

    def work_s(self, size: float) -> float:
        """CPU-seconds of a request of ``size``; an unknown size interpolates (log-log) or clamps."""
        exact = self.size_work_s.get(size)
        if exact is not None:
            return exact
        sizes = sorted(self.size_work_s)
        if size <= 0:
            return self.mean_work_s()
        if len(sizes) == 1:
            return self.size_work_s[sizes[0]]
        i = min(max(bisect.bisect_left(sizes, size), 1), len(sizes) - 1)
        lo, hi = sizes[i - 1], sizes[i]
        # work grows as a power of the side (side^2 log side for a 2-D FFT): interpolate in log-log,
        # and extrapolate the same power one segment beyond either end
        t = (math.log(size) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return math.exp(math.log(self.size_work_s[lo]) * (1 - t) + math.log(self.size_work_s[hi]) * t)

    def mean_work_s(self) -> float:
        if self.size_shares:
            total = sum(self.size_shares.values())
            return sum(p * self.work_s(s) for s, p in self.size_shares.items()) / total
        values = list(self.size_work_s.values())
        return sum(values) / len(values)

    def active(self, backend: str, wall: float) -> list[Episode]:
        return [e for e in self.episodes if e.backend == backend and e.start_wall <= wall < e.end_wall]


# Per stressor thread: how much of the time it is runnable (competes for the cores), and the speed
# factor it imposes on its neighbours' memory-bound steps. Estimates, used only when the testbed
# does not state them.
COMPETING_PER_WORKER = {"cpu": 1.0, "cache": 1.0, "memory": 1.0, "io": 0.5}
PENALTY = {"cache": 0.8, "memory": 0.8}
NETWORK_KINDS = ("delay", "netem", "network")


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
    overhead = raw.get("request_overhead_s") or {}
    if not isinstance(overhead, Mapping):
        raise HiddenStateError("request_overhead_s: must be an object {backend: seconds}")
    backends = {b.id: b for b in (_backend(item, key, overhead) for key, item in _items(raw, "backends"))}
    episodes = tuple(_episode(item, f"episodes[{i}]", backends) for i, item in _list(raw, "episodes"))
    size_work = _size_map(raw, "size_work_s", required=True)
    shares = _size_map(raw, "size_shares", required=False)
    period = raw.get("cpu_period_s", 0.1)
    return HiddenState(backends, episodes, size_work, shares or None, _positive(period, "cpu_period_s"))


def _size_map(raw: Mapping[str, Any], key: str, *, required: bool) -> dict[float, float]:
    value = raw.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping) or not value:
        raise HiddenStateError(f"{key}: must be a non-empty object {{size: number}}")
    return {_float(k, f"{key} key {k!r}"): _positive(v, f"{key}[{k}]") for k, v in value.items()}


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


def _backend(item: Any, where: str, overhead: Mapping[str, Any]) -> BackendCapacity:
    if not isinstance(item, Mapping):
        raise HiddenStateError(f"{where}: must be an object")
    workers = int(_positive(_require(item, "workers", where), f"{where}.workers"))
    quota = item.get("cpu_quota_cores")
    if item.get("cores") is not None:
        cores = _positive(item["cores"], f"{where}.cores")
    elif quota not in (None, 0):
        cores = min(float(workers), _positive(quota, f"{where}.cpu_quota_cores"))
    else:
        cores = float(workers)
    return BackendCapacity(
        id=str(_require(item, "id", where)),
        workers=workers,
        cores=cores,
        work_mult=_positive(item.get("work_mult", 1.0), f"{where}.work_mult"),
        delay_s=_non_negative(item.get("delay_ms", 0.0), f"{where}.delay_ms") / 1000.0,
        quota_cores=None if quota in (None, 0) else _positive(quota, f"{where}.cpu_quota_cores"),
        overhead_s=_non_negative(
            overhead.get(str(item.get("id")), 0.0), f"request_overhead_s[{item.get('id')}]"
        ),
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
    network = kind in NETWORK_KINDS
    competing = item.get("competing")
    if competing is None:
        competing = 0.0 if network else workers * COMPETING_PER_WORKER.get(kind, 1.0)
    penalty = _positive(item.get("capacity_factor", PENALTY.get(kind, 1.0)), f"{where}.capacity_factor")
    if penalty > 1.0:
        raise HiddenStateError(f"{where}.capacity_factor: must be <= 1, got {penalty}")
    delay = _non_negative(item.get("delay_ms", 0.0), f"{where}.delay_ms") / 1000.0
    competing = _non_negative(competing, f"{where}.competing")
    return Episode(backend, start, end, kind, workers, competing, penalty, delay)


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
