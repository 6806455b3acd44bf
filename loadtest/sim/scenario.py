"""The simulated world's knobs: one frozen, validated ``Scenario``.

Time is in seconds. A backend ``b`` has ``servers`` identical workers (a FCFS M/G/c queue) and a
capacity ``cap_b``; a request of class ``k`` needs ``service_mean_s * factor_k * u / cap_b``
seconds of one worker, ``u`` a unit-mean draw (log-normal with ``service_cv``, exponential, or the
calibrated empirical distribution), multiplied by ``slowdown`` when the backend is inside an
interference episode at the moment service starts.

``load`` is the offered load as a share of the fleet's time-averaged capacity, so the Poisson
arrival rate is ``lambda = load * sum_b(servers * cap_b) * E[1/slow] / E[service at cap 1]``,
where ``E[1/slow] = 1 - p_on + p_on / slowdown`` and ``p_on = on / (on + off)``.

Field names are the ``presage simulate`` flag names (``--service-cv`` -> ``service_cv``); a
mapping (YAML file, environment) is checked by ``from_mapping`` with the key named in every error.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

VIEWS: tuple[str, ...] = ("true", "stale")
SERVICE_DISTS: tuple[str, ...] = ("lognormal", "exponential", "empirical")

# (service factor relative to the lightest class, share of requests): light, medium, heavy.
DEFAULT_CLASSES: tuple[tuple[float, float], ...] = ((1.0, 0.6), (3.0, 0.3), (9.0, 0.1))


@dataclass(frozen=True, slots=True)
class Scenario:
    backends: int = 16
    servers: int = 4
    heterogeneity: float = 4.0  # fastest / slowest capacity; capacities are log-uniformly spread
    load: float = 0.7
    requests: int = 200_000
    warmup: float = 0.1  # share of the first requests left out of every statistic
    classes: tuple[tuple[float, float], ...] = DEFAULT_CLASSES
    service_mean_s: float = 0.005  # lightest class at capacity 1, no interference
    service_dist: str = "lognormal"
    service_cv: float = 0.5
    service_quantiles: tuple[tuple[float, ...], ...] | None = None  # per class, unit mean (empirical)
    interference_on_s: float = 5.0  # mean episode length
    interference_off_s: float = 20.0  # mean time between episodes
    slowdown: float = 3.0
    proxies: int = 2
    interval_s: float = 1.0  # agent report period
    delay_s: float = 0.5  # report age when it reaches the proxies (push + poll)
    choices: int = 2  # candidates scored by `predicted` per decision (0: all; the proxy default)
    view: str = "true"  # what `predicted` starts from, see policies.predicted
    inflight_penalty: float = 0.0  # predicted cost * (1 + penalty * local in-flight)
    probes: int = 3  # Prequal probes per decision
    rif_quantile: float = 0.8  # Prequal hot/cold boundary (Q_RIF)
    ewma_tau_s: float = 10.0  # peak-EWMA decay (Finagle/linkerd default 10 s)
    trace: tuple[tuple[float, float], ...] | None = None  # (t_s, rate scale) steps
    seed: int = 1

    def __post_init__(self) -> None:
        bad = _first_invalid(self)
        if bad is not None:
            raise ValueError(f"{bad}: invalid value {getattr(self, bad)!r}")

    @classmethod
    def from_mapping(cls, raw: dict[str, Any], base: Scenario | None = None) -> Scenario:
        """``base`` (default: the defaults) with ``raw``'s keys replaced; unknown keys are errors."""
        known = {f.name for f in fields(cls)}
        for key in raw:
            if key not in known:
                raise ValueError(f"{key}: unknown scenario key (known: {', '.join(sorted(known))})")
        values = {k: _coerce(k, v) for k, v in raw.items()}
        try:
            return replace(base or cls(), **values)
        except TypeError as exc:
            raise ValueError(str(exc)) from None

    def with_(self, **changes: Any) -> Scenario:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.service_quantiles is not None:
            out["service_quantiles"] = f"<{len(self.service_quantiles)} calibrated tables>"
        return out

    @property
    def p_on(self) -> float:
        if self.interference_on_s <= 0 or self.slowdown == 1.0:
            return 0.0
        return self.interference_on_s / (self.interference_on_s + self.interference_off_s)

    @property
    def class_factors(self) -> tuple[float, ...]:
        return tuple(f for f, _ in self.classes)

    @property
    def class_probs(self) -> tuple[float, ...]:
        total = sum(w for _, w in self.classes)
        return tuple(w / total for _, w in self.classes)

    @property
    def mean_factor(self) -> float:
        return sum(f * p for f, p in zip(self.class_factors, self.class_probs, strict=True))

    def capacity_rate(self, capacities_sum: float) -> float:
        """Requests/s the fleet serves on average (time-averaged over interference)."""
        inv_slow = 1.0 - self.p_on + self.p_on / self.slowdown
        return self.servers * capacities_sum * inv_slow / (self.service_mean_s * self.mean_factor)


def _first_invalid(s: Scenario) -> str | None:
    checks: dict[str, bool] = {
        "backends": s.backends >= 1,
        "servers": s.servers >= 1,
        "heterogeneity": math.isfinite(s.heterogeneity) and s.heterogeneity >= 1.0,
        "load": 0.0 < s.load < 10.0,
        "requests": s.requests >= 10,
        "warmup": 0.0 <= s.warmup < 0.9,
        "classes": _classes_ok(s.classes),
        "service_mean_s": s.service_mean_s > 0 and math.isfinite(s.service_mean_s),
        "service_dist": s.service_dist in SERVICE_DISTS,
        "service_cv": 0.0 <= s.service_cv <= 10.0,
        "service_quantiles": _quantiles_ok(s),
        "interference_on_s": s.interference_on_s >= 0,
        "interference_off_s": s.interference_off_s > 0,
        "slowdown": s.slowdown >= 1.0 and math.isfinite(s.slowdown),
        "proxies": s.proxies >= 1,
        "interval_s": s.interval_s > 0,
        "delay_s": s.delay_s >= 0,
        "choices": s.choices == 0 or s.choices >= 2,  # clamped to the fleet size
        "view": s.view in VIEWS,
        "inflight_penalty": s.inflight_penalty >= 0,
        "probes": s.probes >= 1,
        "rif_quantile": 0.0 < s.rif_quantile <= 1.0,
        "ewma_tau_s": s.ewma_tau_s > 0,
        "trace": s.trace is None or _trace_ok(s.trace),
        "seed": s.seed >= 0,
    }
    return next((name for name, ok in checks.items() if not ok), None)


def _classes_ok(classes: tuple[tuple[float, float], ...]) -> bool:
    return (
        len(classes) >= 1
        and all(len(c) == 2 and c[0] > 0 and c[1] >= 0 for c in classes)
        and sum(c[1] for c in classes) > 0
    )


def _quantiles_ok(s: Scenario) -> bool:
    if s.service_dist != "empirical":
        return s.service_quantiles is None
    q = s.service_quantiles
    return q is not None and len(q) == len(s.classes) and all(len(t) >= 2 and min(t) >= 0 for t in q)


def _trace_ok(trace: tuple[tuple[float, float], ...]) -> bool:
    times = [t for t, _ in trace]
    return (
        len(trace) >= 1
        and all(math.isfinite(t) and math.isfinite(r) and t >= 0 and r >= 0 for t, r in trace)
        and times == sorted(times)
        and trace[-1][1] > 0
    )


def _coerce(key: str, value: Any) -> Any:
    """Values from YAML/env arrive as str, list or number; turn them into the field's type."""
    if key == "classes":
        return parse_classes(value) if isinstance(value, str) else tuple(tuple(map(float, c)) for c in value)
    if key == "trace" or key == "service_quantiles":
        return None if value is None else tuple(tuple(map(float, row)) for row in value)
    default = getattr(Scenario(), key)
    try:
        if isinstance(default, bool):
            return str(value).lower() in ("1", "true", "yes")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected a number, got {value!r}") from None
    return str(value)


def parse_classes(spec: str) -> tuple[tuple[float, float], ...]:
    """``"1:0.6,3:0.3,9:0.1"`` -> ((1.0, 0.6), (3.0, 0.3), (9.0, 0.1)): factor:share pairs."""
    out: list[tuple[float, float]] = []
    for part in spec.split(","):
        factor, sep, share = part.strip().partition(":")
        try:
            out.append((float(factor), float(share) if sep else 1.0))
        except ValueError:
            raise ValueError(f"classes: bad class {part!r} (want FACTOR:SHARE)") from None
    return tuple(out)
