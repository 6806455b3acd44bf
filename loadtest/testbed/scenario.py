"""A testbed scenario: the backends, their noisy neighbours over time, the offered load and sizes.

A scenario is a YAML file (built-ins in ``scenarios/``: ``quick`` and ``full``) read into frozen
dataclasses, checked on construction, with the key named in every error::

    name: quick
    duration_s: 50          # seconds of load per run
    slo_p95_s: 0.15         # the p95 RTT a 10-s window must stay under
    cpu_period_ms: 100      # CFS period of every backend's quota (1..1000; the kernel default 100)
    work: imaging           # what a request does: imaging (default) or checksum (loadtest.testbed.work)
    seed: 7
    trace: {kind: dynamic, low_rps: 60, high_rps: 150, period_s: 10}
    sizes: {128: 0.55, 256: 0.35, 512: 0.10}     # image side (px) -> share; or [[128, 0.55], ...]
    backends:
      - {id: b1, workers: 4, cpu_quota_cores: null, work_mult: 1.0, delay_ms: 0}
    episodes:
      - {backend: b1, start_s: 15, duration_s: 20, kind: cpu, workers: 2}

Backend fields: ``workers`` (threads of its pool, default 2), ``cpu_quota_cores`` (a CFS quota in
cores, ``null`` for none), ``work_mult`` (work per request, default 1), ``delay_ms`` (fixed extra
delay per answer, default 0). An episode runs ``workers`` stress-ng workers of ``kind`` (the iBench
classes of the ETH study: ``cpu``, ``cache``, ``memory`` bandwidth, ``io``) beside one backend from
``start_s`` for ``duration_s`` seconds after the load starts. The trace's shapes are those of
``loadtest.traces.make_trace`` (constant holds the mid rate, step jumps at half time, dynamic
redraws its level every ``period_s``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from loadtest.testbed import imaging
from loadtest.testbed import work as work_kinds

SCENARIO_DIR = Path(__file__).with_name("scenarios")
EPISODE_KINDS: tuple[str, ...] = ("cpu", "cache", "memory", "io")
TRACE_KINDS: tuple[str, ...] = ("constant", "step", "dynamic")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
MAX_BACKENDS = 16
MAX_EPISODES = 64


class ScenarioError(ValueError):
    """A scenario that cannot run; the message starts with the key (``backends[2].workers: ...``)."""


def _fail(key: str, problem: str) -> ScenarioError:
    return ScenarioError(f"{key}: {problem}")


def _number(key: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(key, f"expected a number, got {value!r}")
    if value < lo or (lo_open and value == lo) or value > hi:
        bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
        raise _fail(key, f"must be {bound} and <= {hi:g}, got {value!r}")
    return float(value)


def _integer(key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, f"expected a whole number, got {value!r}")
    if not lo <= value <= hi:
        raise _fail(key, f"must be in {lo}..{hi}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class BackendSpec:
    id: str
    workers: int = 2
    cpu_quota_cores: float | None = None
    work_mult: float = 1.0
    delay_ms: float = 0.0

    def check(self, key: str) -> None:
        if not isinstance(self.id, str) or not _ID.match(self.id):
            raise _fail(f"{key}.id", f"must be 1-32 letters, digits, '_', '.', '-' (got {self.id!r})")
        _integer(f"{key}.workers", self.workers, 1, 64)
        if self.cpu_quota_cores is not None:
            _number(f"{key}.cpu_quota_cores", self.cpu_quota_cores, 0.01, 64.0)
        _number(f"{key}.work_mult", self.work_mult, 0.0, 100.0, lo_open=True)
        _number(f"{key}.delay_ms", self.delay_ms, 0.0, 10_000.0)


@dataclass(frozen=True, slots=True)
class Episode:
    backend: str
    start_s: float
    duration_s: float
    kind: str = "cpu"
    workers: int = 1

    def check(self, key: str, backend_ids: set[str], run_s: float) -> None:
        if self.backend not in backend_ids:
            raise _fail(f"{key}.backend", f"unknown backend {self.backend!r} (known: {sorted(backend_ids)})")
        _number(f"{key}.start_s", self.start_s, 0.0, run_s)
        _number(f"{key}.duration_s", self.duration_s, 0.0, run_s, lo_open=True)
        if self.kind not in EPISODE_KINDS:
            raise _fail(f"{key}.kind", f"must be one of {', '.join(EPISODE_KINDS)} (got {self.kind!r})")
        _integer(f"{key}.workers", self.workers, 1, 16)

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True, slots=True)
class TraceSpec:
    kind: str
    low_rps: float
    high_rps: float
    period_s: float = 10.0

    def check(self, key: str) -> None:
        if self.kind not in TRACE_KINDS:
            raise _fail(f"{key}.kind", f"must be one of {', '.join(TRACE_KINDS)} (got {self.kind!r})")
        _number(f"{key}.low_rps", self.low_rps, 0.0, 100_000.0)
        _number(f"{key}.high_rps", self.high_rps, 0.0, 100_000.0)
        if self.high_rps < self.low_rps:
            raise _fail(f"{key}.high_rps", f"must be >= low_rps ({self.low_rps:g}), got {self.high_rps:g}")
        _number(f"{key}.period_s", self.period_s, 0.0, 3600.0, lo_open=True)


@dataclass(frozen=True, slots=True)
class SizeMix:
    choices: tuple[tuple[int, float], ...]  # (image side in px, weight); weights need not sum to 1

    def check(self, key: str) -> None:
        if not self.choices:
            raise _fail(key, "must list at least one size")
        seen: set[int] = set()
        for i, (size, weight) in enumerate(self.choices):
            _integer(f"{key}[{i}].size", size, imaging.MIN_SIDE, imaging.MAX_SIDE)
            _number(f"{key}[{i}].weight", weight, 0.0, 1e6, lo_open=True)
            if size in seen:
                raise _fail(f"{key}[{i}].size", f"{size} listed twice")
            seen.add(size)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(size for size, _ in self.choices)

    def shares(self) -> dict[int, float]:
        """Size -> probability (the weights normalised)."""
        total = sum(w for _, w in self.choices)
        return {size: w / total for size, w in self.choices}


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    backends: tuple[BackendSpec, ...]
    episodes: tuple[Episode, ...]
    trace: TraceSpec
    duration_s: float
    slo_p95_s: float
    sizes: SizeMix
    seed: int = 1
    cpu_period_ms: float = 100.0
    work: str = work_kinds.DEFAULT_KIND  # what a request does (loadtest.testbed.work)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise _fail("name", f"must be a non-empty string (got {self.name!r})")
        _number("duration_s", self.duration_s, 0.0, 86_400.0, lo_open=True)
        _number("slo_p95_s", self.slo_p95_s, 0.0, 3600.0, lo_open=True)
        _integer("seed", self.seed, 0, 2**63 - 1)
        _number("cpu_period_ms", self.cpu_period_ms, 1.0, 1000.0)
        if self.work not in work_kinds.KINDS:
            raise _fail("work", f"must be one of {', '.join(work_kinds.KINDS)} (got {self.work!r})")
        if not 1 <= len(self.backends) <= MAX_BACKENDS:
            raise _fail("backends", f"must list 1..{MAX_BACKENDS} backends (got {len(self.backends)})")
        ids: set[str] = set()
        for i, backend in enumerate(self.backends):
            backend.check(f"backends[{i}]")
            if backend.id in ids:
                raise _fail(f"backends[{i}].id", f"duplicate id {backend.id!r}")
            ids.add(backend.id)
        if len(self.episodes) > MAX_EPISODES:
            raise _fail("episodes", f"at most {MAX_EPISODES} episodes (got {len(self.episodes)})")
        for i, episode in enumerate(self.episodes):
            episode.check(f"episodes[{i}]", ids, self.duration_s)
        self.trace.check("trace")
        self.sizes.check("sizes")

    def backend(self, backend_id: str) -> BackendSpec:
        for b in self.backends:
            if b.id == backend_id:
                return b
        raise KeyError(backend_id)


# ---------------------------------------------------------------------------------------------
# YAML -> dataclasses, naming the key of every problem


def _fields(key: str, raw: Any, cls: type, required: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise _fail(key, f"must be a mapping, got {type(raw).__name__}")
    known = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    for name in raw:
        if name not in known:
            raise _fail(f"{key}.{name}", f"unknown key (known: {', '.join(sorted(known))})")
    for name in required:
        if name not in raw:
            raise _fail(f"{key}.{name}", "missing")
    return dict(raw)


def _list(key: str, raw: Any) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _fail(key, f"must be a list, got {type(raw).__name__}")
    return raw


def _sizes(raw: Any) -> SizeMix:
    if isinstance(raw, Mapping):
        pairs = list(raw.items())
    elif isinstance(raw, list):
        pairs = []
        for i, item in enumerate(raw):
            if not (isinstance(item, list | tuple) and len(item) == 2):
                raise _fail(f"sizes[{i}]", f"must be a pair [size, weight], got {item!r}")
            pairs.append((item[0], item[1]))
    else:
        raise _fail("sizes", "must be a mapping {size: weight} or a list of [size, weight] pairs")
    return SizeMix(tuple((size, weight) for size, weight in pairs))


def scenario_from_mapping(raw: Any) -> Scenario:
    """Build and check a scenario from parsed YAML; ``ScenarioError`` names the offending key."""
    required = ("name", "backends", "trace", "duration_s", "slo_p95_s", "sizes")
    top = _fields("scenario", raw, Scenario, required)
    backends = tuple(
        BackendSpec(**_fields(f"backends[{i}]", item, BackendSpec, ("id",)))
        for i, item in enumerate(_list("backends", top["backends"]))
    )
    episodes = tuple(
        Episode(**_fields(f"episodes[{i}]", item, Episode, ("backend", "start_s", "duration_s")))
        for i, item in enumerate(_list("episodes", top.get("episodes")))
    )
    trace = TraceSpec(**_fields("trace", top["trace"], TraceSpec, ("kind", "low_rps", "high_rps")))
    return Scenario(
        name=top["name"],
        backends=backends,
        episodes=episodes,
        trace=trace,
        duration_s=top["duration_s"],
        slo_p95_s=top["slo_p95_s"],
        sizes=_sizes(top["sizes"]),
        seed=top.get("seed", 1),
        cpu_period_ms=top.get("cpu_period_ms", 100.0),
        work=top.get("work", work_kinds.DEFAULT_KIND),
    )


def builtin_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A built-in scenario by name (``quick``, ``full``) or a YAML file by path."""
    text = str(name_or_path)
    path = Path(text)
    if "/" not in text and path.suffix not in (".yaml", ".yml"):
        path = SCENARIO_DIR / f"{text}.yaml"
        if not path.is_file():
            raise ScenarioError(f"scenario: no built-in scenario {text!r} (built-in: {builtin_scenarios()})")
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ScenarioError(f"scenario: cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"scenario: {path} is not valid YAML: {exc}") from None
    try:
        return scenario_from_mapping(raw)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
