"""``presage agent``: sample one backend every interval and push its feature vector to Redis.

    presage agent --backend-id ID [--redis URL] [--pid PID] [--cgroup PATH] [--scrape URL]
                  [--interval S] [--windows 5,20,60] [--ttl S] [--prefix presage:] [--history N]

Every flag can also come from the environment as ``PRESAGE_<FLAG>`` (``PRESAGE_BACKEND_ID``,
``PRESAGE_REDIS``, ...); the command line wins. ``--pid`` and ``--cgroup`` may be given together
(the process and the cgroup it runs in). A bad value exits with status 2 and names the flag.
SIGTERM and SIGINT stop the agent cleanly (status 0).

Each tick: read every source (``sampler``), fold the sample into the window aggregates
(``windows``), build a ``schema.FeatureVector`` stamped with the wall-clock time the sample was
taken, and hand it to the pusher thread (``pusher``), which owns all Redis I/O. Ticks follow a
fixed monotonic schedule; a tick that overruns skips the missed slots instead of bunching up.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import schema
from .pusher import Pusher, make_client
from .sampler import Sampler, build_sources
from .windows import WindowSet

log = logging.getLogger("presage.agent")

ENV_PREFIX = "PRESAGE_"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
MIN_INTERVAL_S = 0.1
DEFAULT_TTL_S = 3.0  # the proxy's default staleness bound (PredictedSettings.stale_after_s)
DEFAULT_HISTORY = 1200  # vectors kept per backend for training: 10 minutes at the default interval
REDIS_TIMEOUT_S = 1.0  # bounds every Redis call in the pusher thread, never the sampling loop


class UsageError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class AgentConfig:
    backend_id: str
    redis: str = DEFAULT_REDIS
    pid: int | None = None
    cgroup: str | None = None
    scrape: str | None = None
    interval: float = 0.5
    windows: tuple[int, ...] = schema.DEFAULT_WINDOWS
    ttl: float = DEFAULT_TTL_S
    prefix: str = schema.DEFAULT_PREFIX
    history: int = DEFAULT_HISTORY

    def __post_init__(self) -> None:
        if not self.backend_id or any(c.isspace() for c in self.backend_id):
            raise UsageError(f"--backend-id: must be non-empty without spaces, got {self.backend_id!r}")
        if not self.interval >= MIN_INTERVAL_S:
            raise UsageError(f"--interval: must be at least {MIN_INTERVAL_S} s, got {self.interval!r}")
        if not self.ttl > self.interval:
            raise UsageError(f"--ttl: must exceed --interval ({self.interval} s), got {self.ttl!r}")
        if self.history < 0:
            raise UsageError(f"--history: must be >= 0, got {self.history!r}")
        if not self.prefix:
            raise UsageError("--prefix: must not be empty")
        if self.pid is not None and self.pid <= 0:
            raise UsageError(f"--pid: must be a positive process id, got {self.pid!r}")


def _windows(text: str) -> tuple[int, ...]:
    try:
        return schema.check_windows([int(w) for w in text.split(",") if w.strip()])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# flag -> (type, help). Defaults live on AgentConfig so there is one source of truth.
FLAGS: dict[str, tuple[Callable[[str], Any], str]] = {
    "--backend-id": (str, "the backend's id, as the proxy names it (required)"),
    "--redis": (
        str,
        f"Redis URL (default {DEFAULT_REDIS}); redis://, rediss://, unix://, redis+sentinel://, "
        "redis+cluster://",
    ),
    "--pid": (int, "the backend's process id; its children are included"),
    "--cgroup": (
        str,
        "the backend's cgroup: a path as in /proc/PID/cgroup or a directory under /sys/fs/cgroup",
    ),
    "--scrape": (str, "the backend's Prometheus text endpoint, e.g. http://127.0.0.1:8000/metrics"),
    "--interval": (float, f"seconds between samples (default 0.5, minimum {MIN_INTERVAL_S})"),
    "--windows": (_windows, "window lengths in seconds for the aggregates (default 5,20,60)"),
    "--ttl": (float, f"seconds a pushed vector lives in Redis (default {DEFAULT_TTL_S})"),
    "--prefix": (str, f"Redis key prefix (default {schema.DEFAULT_PREFIX})"),
    "--history": (
        int,
        f"vectors kept in the per-backend history stream, 0 for none (default {DEFAULT_HISTORY})",
    ),
}

METAVARS: dict[str, str] = {
    "--backend-id": "ID", "--redis": "URL", "--pid": "PID", "--cgroup": "PATH", "--scrape": "URL",
    "--interval": "S", "--windows": "W,W,...", "--ttl": "S", "--prefix": "PREFIX", "--history": "N",
}  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="presage agent", description="Run a metrics agent beside one backend.")
    for flag, (kind, help_) in FLAGS.items():
        p.add_argument(
            flag, type=kind, default=None, metavar=METAVARS[flag], help=f"{help_} [env {env_name(flag)}]"
        )
    p.add_argument(
        "--log-level",
        default=None,
        metavar="LEVEL",
        help="debug, info, warning (default info) [env PRESAGE_LOG_LEVEL]",
    )
    return p


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def load_config(argv: Sequence[str], env: Mapping[str, str]) -> tuple[AgentConfig, str]:
    """CLI > environment > default; every error names the flag (and the variable it came from)."""
    args = vars(_parser().parse_args(list(argv)))
    values: dict[str, Any] = {}
    for flag, (kind, _) in FLAGS.items():
        key = flag.lstrip("-").replace("-", "_")
        if args[key] is not None:
            values[key] = args[key]
        elif (raw := env.get(env_name(flag))) not in (None, ""):
            try:
                values[key] = kind(raw)
            except (ValueError, argparse.ArgumentTypeError) as exc:
                raise UsageError(f"{flag} (from {env_name(flag)}): {exc}") from None
    if "backend_id" not in values:
        raise UsageError(f"--backend-id is required (or set {env_name('--backend-id')})")
    level = (args["log_level"] or env.get("PRESAGE_LOG_LEVEL") or "info").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise UsageError(f"--log-level: expected debug, info, warning or error, got {level.lower()!r}")
    return AgentConfig(**values), level


class Agent:
    """The sampling loop; ``run`` returns when ``stop`` is set."""

    def __init__(self, cfg: AgentConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self.sampler = Sampler(
            build_sources(pid=cfg.pid, cgroup=cfg.cgroup, scrape=cfg.scrape, interval_s=cfg.interval)
        )
        self.windows = WindowSet(cfg.windows, len(schema.BASE_METRICS))
        self.pusher = Pusher(
            make_client(cfg.redis, timeout_s=REDIS_TIMEOUT_S),
            cfg.backend_id,
            prefix=cfg.prefix,
            ttl_s=cfg.ttl,
            history=cfg.history,
            interval_s=cfg.interval,
        )
        self.seq = 0
        self._tick_error: str | None = None

    def tick(self, now: float) -> schema.FeatureVector:
        ts = self.clock()  # when the sample was taken: the proxy measures freshness from this
        values, missing = self.sampler.sample(now)
        self.windows.add(now, values)
        vec = schema.FeatureVector(
            backend=self.cfg.backend_id,
            seq=self.seq,
            ts=ts,
            windows=self.cfg.windows,
            values=tuple(self.windows.vector(values)),
            missing=missing,
        )
        self.seq += 1
        return vec

    def run(self, stop: threading.Event) -> None:
        interval = self.cfg.interval
        self.pusher.start()
        self.sampler.sample(time.monotonic())  # prime the rates (counters need two readings)
        next_tick = time.monotonic() + interval
        try:
            while not stop.wait(max(0.0, next_tick - time.monotonic())):
                self._tick_once()
                next_tick += interval
                now = time.monotonic()
                if next_tick <= now:  # overran: skip the missed slots, keep the phase
                    next_tick += ((now - next_tick) // interval + 1) * interval
        finally:
            self.pusher.close()
            self.sampler.close()

    def _tick_once(self) -> None:
        try:
            self.pusher.submit(schema.encode(self.tick(time.monotonic())))
        except Exception as exc:  # a bug in one tick must not stop the agent; say so once per kind
            err = f"{type(exc).__name__}: {exc}"
            if err != self._tick_error:
                log.exception("tick failed; the agent keeps running")
                self._tick_error = err
            return
        self._tick_error = None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg, level = load_config(sys.argv[1:] if argv is None else argv, os.environ)
    except UsageError as exc:
        print(f"presage agent: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=level, format="%(asctime)s presage-agent[%(process)d] %(levelname)s %(message)s"
    )
    try:
        agent = Agent(cfg)
    except ValueError as exc:
        print(f"presage agent: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "agent for %s: interval %.2f s, windows %s, redis %s",
        cfg.backend_id, cfg.interval, ",".join(map(str, cfg.windows)), _redacted(cfg.redis),
    )  # fmt: skip
    agent.run(stop)
    log.info("stopped after %d vectors (%d pushed)", agent.seq, agent.pusher.pushed)
    return 0


def _redacted(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{host}"
