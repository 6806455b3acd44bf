"""Locust load for any Presage deployment: ``GET /work`` with request sizes from a mix, at a rate
that follows the constant, step or dynamic trace of ``loadtest.traces``.

Run headless, e.g.::

    PRESAGE_LOCUST_TRACE=dynamic PRESAGE_LOCUST_LOW=50 PRESAGE_LOCUST_HIGH=200 \\
        locust -f loadtest/locustfile.py --headless --host http://127.0.0.1:8080 --csv out/locust -t 20s

Environment (all optional; a bad value stops Locust with the variable named):

=============================== ========================= ===========================================
``PRESAGE_LOCUST_TRACE``        ``constant``              ``constant`` | ``step`` | ``dynamic``
``PRESAGE_LOCUST_LOW``          ``50``                    low rate, req/s (``make_trace``: constant
``PRESAGE_LOCUST_HIGH``         ``200``                   holds the midpoint)
``PRESAGE_LOCUST_PERIOD``       ``10``                    dynamic trace: seconds per level
``PRESAGE_LOCUST_DURATION``     ``60``                    seconds; ``-t`` overrides it
``PRESAGE_LOCUST_SEED``         ``1``                     dynamic levels and request sizes
``PRESAGE_LOCUST_USER_RPS``     ``1``                     requests/s of one user
``PRESAGE_LOCUST_MIX``          ``64:0.45,128:0.3,...``   ``SIZE:WEIGHT,...``
``PRESAGE_LOCUST_PATH``         ``/work``                 request path
``PRESAGE_LOCUST_SIZE_PARAM``   ``size``                  query parameter carrying the size
``PRESAGE_LOCUST_CLASS_HEADER`` ``X-Presage-Class``       header carrying the size (``--class-from``)
=============================== ========================= ===========================================

How the rate is made. Locust is closed-loop per user, so the shape sets the *number of users* to
``ceil(rate(t) / USER_RPS)`` and each user sends at Poisson times of rate ``USER_RPS`` (so the
users together offer a Poisson stream, as ``loadtest.loadgen`` does). A user has one request out at
a time: this holds the trace's rate only while answers come back well within ``1/USER_RPS``
seconds; past that a user falls behind (it catches up, without waiting, once answers are fast
again) and the offered load follows the server's speed (coordinated omission). For a
strictly open loop, use ``python -m loadtest.loadgen``; this file is for driving a deployment with
a standard tool and reading Locust's CSV and web UI.

One shape class per trace kind; the one named by ``PRESAGE_LOCUST_TRACE`` is the active one (Locust
takes a file's non-abstract shape class, so the others are marked abstract).
"""

from __future__ import annotations

import itertools
import math
import os
import random
import time
from dataclasses import dataclass
from typing import ClassVar

import gevent
from locust import FastHttpUser, LoadTestShape, task

from loadtest.traces import DEFAULT_SIZE_MIX, TRACE_KINDS, Trace, make_trace, parse_mix

ENV_PREFIX = "PRESAGE_LOCUST_"


def _env(name: str, default: str) -> str:
    return os.environ.get(ENV_PREFIX + name, default)


def _env_number(name: str, default: float, kind: type[float] | type[int] = float) -> float:
    raw = _env(name, str(default))
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name}={raw!r} is not a valid {kind.__name__}") from None
    if not math.isfinite(value):
        raise ValueError(f"{ENV_PREFIX}{name}={raw!r} must be finite")
    return value


@dataclass(frozen=True)
class Settings:
    trace: str
    low: float
    high: float
    period_s: float
    duration_s: float
    seed: int
    user_rps: float
    mix: dict[int, float]
    path: str
    size_param: str
    class_header: str

    @classmethod
    def from_env(cls) -> Settings:
        kind = _env("TRACE", "constant")
        if kind not in TRACE_KINDS:
            raise ValueError(f"{ENV_PREFIX}TRACE={kind!r}: expected one of {', '.join(TRACE_KINDS)}")
        user_rps = _env_number("USER_RPS", 1.0)
        if user_rps <= 0:
            raise ValueError(f"{ENV_PREFIX}USER_RPS must be > 0, got {user_rps}")
        mix_text = _env("MIX", ",".join(f"{k}:{v}" for k, v in DEFAULT_SIZE_MIX.items()))
        try:
            mix = parse_mix(mix_text)
        except ValueError as exc:
            raise ValueError(f"{ENV_PREFIX}MIX: {exc}") from None
        settings = cls(
            trace=kind,
            low=_env_number("LOW", 50.0),
            high=_env_number("HIGH", 200.0),
            period_s=_env_number("PERIOD", 10.0),
            duration_s=_env_number("DURATION", 60.0),
            seed=int(_env_number("SEED", 1, int)),
            user_rps=user_rps,
            mix=mix,
            path=_env("PATH", "/work"),
            size_param=_env("SIZE_PARAM", "size"),
            class_header=_env("CLASS_HEADER", "X-Presage-Class"),
        )
        settings.make_trace(settings.duration_s)  # fail at start-up, naming the bad number
        return settings

    def make_trace(self, duration_s: float) -> Trace:
        try:
            return make_trace(self.trace, self.low, self.high, self.period_s, duration_s, self.seed)
        except ValueError as exc:
            raise ValueError(f"{ENV_PREFIX}* trace settings: {exc}") from None


SETTINGS = Settings.from_env()
_user_numbers = itertools.count()


def users_for_rate(rate_rps: float, user_rps: float) -> int:
    """Users needed to offer ``rate_rps`` when each sends ``user_rps``."""
    return math.ceil(rate_rps / user_rps - 1e-9) if rate_rps > 0 else 0


class PresageUser(FastHttpUser):
    """One client: a GET with a size (query and class header) drawn from the mix, at Poisson times
    of rate USER_RPS. Independent Poisson users add up to a Poisson stream of ``users * USER_RPS``,
    the same arrival process as ``loadtest.loadgen`` (as long as answers beat the next due time)."""

    def on_start(self) -> None:
        # Each user its own seeded stream: a run's sizes and gaps depend only on the seed.
        self.rng = random.Random(SETTINGS.seed * 1_000_003 + next(_user_numbers))
        self.sizes = list(SETTINGS.mix)
        self.weights = list(SETTINGS.mix.values())
        gevent.sleep(self.rng.expovariate(SETTINGS.user_rps))  # first request at a Poisson time too
        self.due = time.perf_counter()

    def wait_time(self) -> float:
        # Called after each task: wait until the next Poisson due time, counted from the last one,
        # so the task's own duration does not stretch the gap (Locust's constant_throughput, but
        # exponential gaps and no burst at a user's start).
        self.due += self.rng.expovariate(SETTINGS.user_rps)
        return max(0.0, self.due - time.perf_counter())

    @task
    def work(self) -> None:
        size = self.rng.choices(self.sizes, self.weights)[0]
        self.client.get(
            f"{SETTINGS.path}?{SETTINGS.size_param}={size}",
            headers={SETTINGS.class_header: str(size)},
            name=f"{SETTINGS.path} size={size}",
        )


class TraceShape(LoadTestShape):
    """Users over time so that ``users * USER_RPS`` follows a ``loadtest.traces`` trace."""

    abstract = True
    use_common_options = True  # read -t as the trace's duration
    kind: ClassVar[str] = "constant"

    def __init__(self) -> None:
        super().__init__()
        self._trace: Trace | None = None

    def trace(self) -> Trace:
        if self._trace is None:
            options = getattr(getattr(self.runner, "environment", None), "parsed_options", None)
            run_time = getattr(options, "run_time", None)
            duration = float(run_time) if run_time else SETTINGS.duration_s
            self._trace = make_trace(
                self.kind, SETTINGS.low, SETTINGS.high, SETTINGS.period_s, duration, SETTINGS.seed
            )
        return self._trace

    def tick(self) -> tuple[int, float] | None:
        return self.tick_at(self.get_run_time())

    def tick_at(self, t: float) -> tuple[int, float] | None:
        """``(users, spawn rate)`` at ``t`` seconds into the run; None ends it."""
        trace = self.trace()
        if t >= trace.duration_s:
            return None
        users = users_for_rate(trace.rate_at(t), SETTINGS.user_rps)
        return users, float(max(users, 1))  # reach a new level within about a second


class ConstantShape(TraceShape):
    abstract = SETTINGS.trace != "constant"
    kind = "constant"


class StepShape(TraceShape):
    abstract = SETTINGS.trace != "step"
    kind = "step"


class DynamicShape(TraceShape):
    abstract = SETTINGS.trace != "dynamic"
    kind = "dynamic"
