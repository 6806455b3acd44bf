"""Noisy neighbours: stress-ng processes placed beside one backend for a scheduled episode.

The kinds follow the interference classes of iBench (Delimitrou & Kozyrakis, "iBench: Quantifying
interference for datacenter applications", IISWC 2013) that the ETH Zurich memcached/PARSEC
co-location study used: CPU, cache (LLC thrashing), memory bandwidth, and I/O. Each is one stress-ng
stressor (``STRESSORS``). A stressor process is started through the ``launch`` shim so that it and
its workers are born inside the target backend's cgroup, where they share that backend's CPU quota;
without cgroups they are pinned to the backend's CPUs instead. Each also carries ``--timeout`` so it
ends on its own should the testbed die before stopping it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest.testbed.procs import Child
from loadtest.testbed.scenario import Episode

log = logging.getLogger(__name__)

# kind -> stress-ng arguments for ``workers`` workers (the ``{n}`` placeholder)
STRESSORS: dict[str, tuple[str, ...]] = {
    "cpu": ("--cpu", "{n}", "--cpu-load", "100"),
    "cache": ("--cache", "{n}"),
    # STREAM (McCalpin) sizes its arrays from the L3 size; a VM may report the host's (hundreds of
    # MiB: gigabytes to initialise), so it is fixed: 4 x 64 MiB arrays, beyond any real LLC here
    "memory": ("--stream", "{n}", "--stream-l3-size", "64M"),
    "io": ("--hdd", "{n}", "--hdd-bytes", "16M"),
}


def find_stress_ng() -> tuple[str | None, str]:
    """(path or None, a line for ``capabilities``: the version, or why it is missing)."""
    path = shutil.which("stress-ng")
    if path is None:
        return None, "missing: stress-ng not on PATH (apt-get install stress-ng); episodes are skipped"
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"missing: {path} --version failed ({exc}); episodes are skipped"
    return path, f"{path} ({out.stdout.strip() or 'version unknown'})"


def stress_argv(stress_ng: str, episode: Episode, seconds: float, temp_dir: Path) -> list[str]:
    args = [a.replace("{n}", str(episode.workers)) for a in STRESSORS[episode.kind]]
    timeout = max(1, int(seconds + 2))  # the self-destruct bound; the scheduler stops it on time
    return [stress_ng, *args, "--timeout", f"{timeout}s", "--temp-path", str(temp_dir), "--quiet"]


@dataclass(slots=True)
class EpisodeRun:
    """What happened to one scheduled episode (``status``: scheduled, running, done, skipped: ...)."""

    index: int
    episode: Episode
    start_wall: float
    end_wall: float
    status: str = "scheduled"
    pid: int | None = None
    started_at: float | None = None
    stopped_at: float | None = None


class InterferenceScheduler:
    """Runs a scenario's episodes against wall time ``t0``: one bounded task per episode."""

    def __init__(
        self,
        episodes: Sequence[Episode],
        t0_wall: float,
        *,
        stress_ng: str | None,
        prefix_for: Callable[[str], list[str]],
        workdir: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runs = [
            EpisodeRun(i, e, t0_wall + e.start_s, t0_wall + e.end_s) for i, e in enumerate(episodes)
        ]
        self.stress_ng = stress_ng
        self.prefix_for = prefix_for  # backend id -> launch-shim prefix (join its cgroup / pin CPUs)
        self.workdir = workdir
        self.clock = clock
        self.children: dict[int, Child] = {}
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._run(r), name=f"episode-{r.index}") for r in self.runs]

    async def _run(self, run: EpisodeRun) -> None:
        if self.stress_ng is None:
            run.status = "skipped: stress-ng missing"
            return
        wait = run.start_wall - self.clock()
        if wait > 0:
            await asyncio.sleep(wait)
        remaining = run.end_wall - self.clock()
        if remaining <= 0:
            run.status = "skipped: its end was already past"
            return
        temp = self.workdir / f"stress-{run.index}"
        temp.mkdir(parents=True, exist_ok=True)
        stress = stress_argv(self.stress_ng, run.episode, remaining, temp)
        argv = [*self.prefix_for(run.episode.backend), *stress]
        try:
            child = Child(f"stress-{run.index}", argv, self.workdir / f"stress-{run.index}.log", temp)
        except OSError as exc:
            run.status = f"skipped: cannot start stress-ng ({exc})"
            log.warning("episode %d on %s: %s", run.index, run.episode.backend, run.status)
            return
        self.children[run.index] = child
        run.pid, run.started_at, run.status = child.pid, child.started_at, "running"
        log.info("episode %d: %s x%d beside %s (pid %d) for %.1f s", run.index, run.episode.kind,
                 run.episode.workers, run.episode.backend, child.pid, remaining)
        try:
            await asyncio.sleep(max(0.0, run.end_wall - self.clock()))
        finally:
            await self._end(run, child)

    async def _end(self, run: EpisodeRun, child: Child) -> None:
        await asyncio.shield(child.stop())
        run.stopped_at = child.stopped_at
        run.status = "done"
        self.children.pop(run.index, None)

    def running(self) -> list[EpisodeRun]:
        return [r for r in self.runs if r.status == "running"]

    async def stop(self) -> None:
        """Cancel what has not started, stop what runs; returns when every stress-ng is gone."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for child in list(self.children.values()):  # a stop cancelled mid-way: finish it
            await child.stop()
        self.children.clear()
