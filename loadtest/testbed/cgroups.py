"""Per-backend CPU cgroups: a CFS bandwidth quota per backend, and a place to put its noisy neighbours.

The CFS bandwidth controller (Turner, Rao & Rao, "CPU bandwidth control for CFS", Linux Symposium
2010; Documentation/scheduler/sched-bwc.rst) lets the tasks of a group run for at most ``quota``
microseconds in every ``period``: ``quota / period`` cores. A backend with a 0.3-core quota is a
backend on a 0.3-core machine, and a stress-ng process placed *into the same group* competes for
those 0.3 cores only, so interference hits one backend selectively, as a co-located tenant does.

Layout: one run group ``presage-tb-<pid>-<n>`` below this process's own group in each controller,
and one child per backend. Version 1 (``cpu`` and, when mounted apart, ``cpuacct`` for usage)
writes ``cpu.cfs_quota_us``/``cpu.cfs_period_us``; version 2 writes ``cpu.max``. Memory is not
limited or accounted per backend: a memory group would nest in the sandbox's own memory hierarchy.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000  # the kernel default period; quota = cores * period
RUN_PREFIX = "presage-tb-"
_run_counter = itertools.count()


class CgroupUnavailable(RuntimeError):
    """No writable CPU controller here; the message says why (shown in ``capabilities``)."""


def _own_path(controller: str) -> str:
    """This process's group in ``controller`` (v1) or in the unified tree (``""``), from /proc."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if (controller and controller in names.split(",")) or (not controller and names == ""):
            return path
    return "/"


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the CPU controller lives: ``version`` 1 or 2 and the mount of each controller used."""

    version: int
    cpu_mount: Path  # v1: the cpu controller mount; v2: the unified mount
    acct_mount: Path | None  # v1 only: cpuacct when mounted apart from cpu

    def base(self, mount: Path, controller: str) -> Path:
        return mount / _own_path(controller).lstrip("/")


def detect(root: Path = CGROUP_ROOT) -> Layout:
    """The CPU controller layout, or ``CgroupUnavailable`` naming the reason."""
    v1 = root / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists():
        acct = root / "cpuacct"
        acct_mount = acct if (acct / "cpuacct.usage").exists() and acct.resolve() != v1.resolve() else None
        layout = Layout(1, v1, acct_mount)
        _probe(layout.base(v1, "cpu"))
        return layout
    if "cpu" in _read(root / "cgroup.controllers").split():
        layout = Layout(2, root, None)
        base = layout.base(root, "")
        if "cpu" not in _read(base / "cgroup.subtree_control").split():
            raise CgroupUnavailable(f"cgroup v2: cpu controller not enabled below {base}")
        _probe(base)
        return layout
    raise CgroupUnavailable(f"no cgroup CPU controller under {root} (neither v1 cpu nor v2 with cpu)")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _probe(base: Path) -> None:
    probe = base / f"{RUN_PREFIX}probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError as exc:
        raise CgroupUnavailable(f"cannot create a group in {base}: {exc.strerror or exc}") from None
    with contextlib.suppress(OSError):
        probe.rmdir()


class BackendGroup:
    """One backend's group: ``procs_files`` to join it, ``path`` for the agent's ``--cgroup``."""

    def __init__(self, name: str, dirs: list[Path], cpu_dir: Path, version: int) -> None:
        self.name = name
        self.dirs = dirs  # every controller directory of this group (cpu first)
        self.cpu_dir = cpu_dir
        self.version = version

    @property
    def path(self) -> Path:
        return self.cpu_dir

    @property
    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs]

    def set_quota(self, cores: float | None, period_us: int = PERIOD_US) -> None:
        """``cores`` of CPU per ``period_us``, or no limit for ``None``.

        The period sets how lumpy the limit is: a group that spends its quota early waits for the
        next period, so a 0.3-core group on the default 100-ms period can stall a request for 70 ms,
        where a 10-ms period stalls it for at most 7 ms. The kernel accepts 1 ms to 1 s.
        """
        period_us = min(1_000_000, max(1000, int(period_us)))
        quota = -1 if cores is None else max(1000, round(cores * period_us))
        if self.version == 1:
            (self.cpu_dir / "cpu.cfs_period_us").write_text(str(period_us))
            (self.cpu_dir / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (self.cpu_dir / "cpu.max").write_text(f"{'max' if quota < 0 else quota} {period_us}")

    def add(self, pid: int) -> None:
        for procs in self.procs_files:
            procs.write_text(str(pid))

    def pids(self) -> list[int]:
        text = _read(self.cpu_dir / "cgroup.procs")
        return [int(x) for x in text.split()]

    def cpu_usage_s(self) -> float | None:
        """CPU-seconds the group's tasks have used (v1 ``cpuacct.usage``, v2 ``usage_usec``)."""
        if self.version == 2:
            stat = dict(line.split() for line in _read(self.cpu_dir / "cpu.stat").splitlines() if " " in line)
            return int(stat["usage_usec"]) / 1e6 if "usage_usec" in stat else None
        for d in self.dirs:
            text = _read(d / "cpuacct.usage").strip()
            if text:
                return int(text) / 1e9
        return None

    def throttled(self) -> tuple[int, float]:
        """(throttled periods, throttled seconds) so far, from ``cpu.stat``."""
        stat = dict(line.split() for line in _read(self.cpu_dir / "cpu.stat").splitlines() if " " in line)
        if self.version == 1:
            return int(stat.get("nr_throttled", 0)), int(stat.get("throttled_time", 0)) / 1e9
        return int(stat.get("nr_throttled", 0)), int(stat.get("throttled_usec", 0)) / 1e6


class RunGroups:
    """The run group and its backend children; ``remove()`` takes them all away again."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.name = f"{RUN_PREFIX}{os.getpid()}-{next(_run_counter)}"
        mounts = [(layout.cpu_mount, "cpu" if layout.version == 1 else "")]
        if layout.acct_mount is not None:
            mounts.append((layout.acct_mount, "cpuacct"))
        self.run_dirs = [layout.base(mount, ctl) / self.name for mount, ctl in mounts]
        self.groups: dict[str, BackendGroup] = {}
        for d in self.run_dirs:
            d.mkdir()
        if layout.version == 2:  # children of the run group need the cpu controller delegated
            (self.run_dirs[0] / "cgroup.subtree_control").write_text("+cpu")

    def create(self, backend_id: str) -> BackendGroup:
        dirs = [d / backend_id for d in self.run_dirs]
        for d in dirs:
            d.mkdir()
        group = BackendGroup(backend_id, dirs, dirs[0], self.layout.version)
        self.groups[backend_id] = group
        return group

    def remove(self, timeout_s: float = 5.0) -> list[str]:
        """Remove every group made here, children first; returns what could not be removed.

        A group can only go once its tasks have exited, so this retries until ``timeout_s``.
        """
        dirs = [d for g in self.groups.values() for d in g.dirs] + self.run_dirs
        return _rmdirs(dirs, timeout_s)


def _rmdirs(dirs: list[Path], timeout_s: float) -> list[str]:
    deadline = time.monotonic() + timeout_s
    left = [d for d in dirs if d.exists()]
    while left:
        still = []
        for d in left:
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                still.append(d)
        left = still
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for d in left:
        log.warning("cgroup %s not removed (tasks: %s)", d, _read(d / "cgroup.procs").split())
    return [str(d) for d in left]


def remove_stale(layout: Layout) -> list[str]:
    """Remove empty run groups left by testbeds whose process has died (a killed test run)."""
    removed = []
    mounts = [(layout.cpu_mount, "cpu" if layout.version == 1 else "")]
    if layout.acct_mount is not None:
        mounts.append((layout.acct_mount, "cpuacct"))
    for mount, ctl in mounts:
        base = layout.base(mount, ctl)
        for run in base.glob(f"{RUN_PREFIX}*-*"):
            owner = run.name[len(RUN_PREFIX) :].split("-")[0]
            if not owner.isdigit() or Path(f"/proc/{owner}").exists():
                continue
            children = [c for c in run.iterdir() if c.is_dir()]
            if not _rmdirs([*children, run], 0.0):
                removed.append(str(run))
    return removed
