"""Raw samples of one backend's host, process, cgroup, GPU and application metrics.

Each source produces some of ``schema.BASE_METRICS`` and nothing else. A source the machine does
not have (no ``/proc/pressure``, no NVML, no ``--pid``) raises ``SourceAbsent`` once: it is logged
once and dropped for the agent's life, and its metrics travel as 0 named in ``missing``. A source
that fails now and then (the backend's ``/metrics`` answers 500, the process exited, a cgroup was
removed) is retried every tick; its failures are logged when they start and when they end, never
once per tick.

Counters become rates (bytes/s, CPU seconds per second) from the difference between two ticks;
the agent primes every source with one read before its first real tick.

cgroups: both layouts are read (kernel docs ``admin-guide/cgroup-v1`` and ``cgroup-v2``). ``--cgroup``
takes a cgroup path as in ``/proc/PID/cgroup`` (``/system.slice/app.service``) or a directory under
a cgroup mount (``/sys/fs/cgroup/unified/app``, ``/sys/fs/cgroup/memory/app``); the same relative
path is then looked up on every mount in ``/proc/self/mountinfo``, so a hybrid machine (v1
controllers plus a cgroup2 mount at ``/sys/fs/cgroup/unified``) is read from both. The layout the
user named is preferred for each value; the other fills what it lacks (PSI exists only on v2).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil

from . import schema
from .scrape import Scraper

log = logging.getLogger("presage.agent")

PSI_RESOURCES: tuple[str, ...] = ("cpu", "memory", "io")
V1_UNLIMITED = 1 << 62  # memory.limit_in_bytes reports ~2^63 rounded to a page when unlimited
PROC_TREE_REFRESH_S = 5.0  # children() scans all of /proc; the tree changes far less often than ticks


class SourceAbsent(Exception):
    """The machine does not have this source; it is dropped for the agent's life."""


class Source(Protocol):
    name: str

    def read(self, now: float) -> dict[str, float]: ...

    def close(self) -> None: ...


class Rate:
    """Per-second rate of a monotonically increasing counter; None until two readings exist."""

    __slots__ = ("_t", "_v")

    def __init__(self) -> None:
        self._t: float | None = None
        self._v = 0.0

    def update(self, value: float, now: float) -> float | None:
        prev_t, prev_v = self._t, self._v
        self._t, self._v = now, value
        if prev_t is None or now <= prev_t or value < prev_v:  # first reading or a counter reset
            return None
        return (value - prev_v) / (now - prev_t)


def _put_rate(out: dict[str, float], name: str, rate: Rate, value: float, now: float) -> None:
    r = rate.update(value, now)
    if r is not None:
        out[name] = r


def read_psi_some_avg10(path: Path | str) -> float:
    """``some avg10`` (percent of the last 10 s some task stalled) from a PSI file."""
    with open(path) as fh:
        first = fh.readline()
    for field in first.split()[1:]:
        key, _, value = field.partition("=")
        if key == "avg10":
            return float(value)
    raise ValueError(f"{path}: no avg10 in {first!r}")


# -- host ------------------------------------------------------------------------------------------


# Block devices that only mirror I/O already counted on a physical disk (loop files, device mapper,
# software RAID) or are not disks at all (RAM disks, compressed RAM swap).
VIRTUAL_DISK_PREFIXES = ("loop", "ram", "zram", "dm-", "md")


class DiskBytes:
    """Bytes read + written on whole physical disks, from ``/proc/diskstats``.

    psutil's ``disk_io_counters`` stats ``/sys/block`` for every line and keeps wrap-around
    bookkeeping on each call - over a third of a tick's cost at 0.1 s; the disk list is fixed at
    start here and a reset counter is handled by ``Rate``. Diskstats counts 512-byte sectors
    whatever the device's sector size (``Documentation/admin-guide/iostats.rst``).
    """

    def __init__(self, diskstats: str = "/proc/diskstats", sys_block: str = "/sys/block") -> None:
        self.path = diskstats
        self.disks = frozenset(d for d in os.listdir(sys_block) if not d.startswith(VIRTUAL_DISK_PREFIXES))
        self.read()  # fail here, once, if the file is unreadable

    def read(self) -> float:
        total = 0
        with open(self.path) as fh:
            for line in fh:
                f = line.split()
                if len(f) > 9 and f[2] in self.disks:
                    total += int(f[5]) + int(f[9])  # sectors read, sectors written
        return total * 512.0


class HostSource:
    """Whole-machine CPU, load, context switches, memory, network and disk (psutil, /proc)."""

    name = "host"

    def __init__(self) -> None:
        self._cores = psutil.cpu_count() or 1
        self._busy = Rate()
        self._total = Rate()
        self._ctx = Rate()
        self._net = Rate()
        self._disk = Rate()
        try:
            self._disks: DiskBytes | None = DiskBytes()
        except OSError as exc:  # containers without /sys/block: host_disk_io_bytes_per_s missing
            log.info("no disk statistics (%s): host_disk_io_bytes_per_s is sent as missing", exc)
            self._disks = None

    def read(self, now: float) -> dict[str, float]:
        out: dict[str, float] = {}
        ct = psutil.cpu_times()
        # busy: the monotonic busy fields only (guest time is already inside user/nice, proc(5)).
        # iowait is left out of both sums: the kernel documents it as unreliable, and it can go
        # backwards between two reads, which would make a derived counter "reset" and drop the
        # sample.
        busy = (
            ct.user + ct.nice + ct.system + getattr(ct, "irq", 0.0) + getattr(ct, "softirq", 0.0)
            + getattr(ct, "steal", 0.0)
        )  # fmt: skip
        total = busy + ct.idle
        d_busy, d_total = self._busy.update(busy, now), self._total.update(total, now)
        if d_busy is not None and d_total:
            out["host_cpu_util"] = min(max(d_busy / d_total, 0.0), 1.0)
        out["host_load1_per_core"] = os.getloadavg()[0] / self._cores
        _put_rate(out, "host_ctx_switches_per_s", self._ctx, psutil.cpu_stats().ctx_switches, now)
        vm = psutil.virtual_memory()
        out["host_mem_used_frac"] = (vm.total - vm.available) / vm.total
        net = psutil.net_io_counters(nowrap=False)  # Rate skips a wrapped counter; no bookkeeping
        if net is not None:
            _put_rate(out, "host_net_bytes_per_s", self._net, net.bytes_sent + net.bytes_recv, now)
        if self._disks is not None:
            _put_rate(out, "host_disk_io_bytes_per_s", self._disk, self._disks.read(), now)
        return out

    def close(self) -> None:
        pass


class PsiSource:
    """Pressure stall information of the host (``/proc/pressure``) or of a cgroup v2 directory."""

    def __init__(self, directory: Path, prefix: str, suffix: str = "") -> None:
        self.name = f"{prefix}_psi"
        self._files: dict[str, Path] = {}
        short = {"cpu": "cpu", "memory": "mem", "io": "io"}
        for res in PSI_RESOURCES:
            path = directory / f"{res}{suffix}"
            try:
                read_psi_some_avg10(path)
            except (OSError, ValueError):  # absent, or EOPNOTSUPP when the kernel runs psi=0
                continue
            self._files[f"{prefix}_psi_{short[res]}_some_avg10"] = path
        if not self._files:
            raise SourceAbsent(f"no pressure stall information under {directory}")

    def read(self, now: float) -> dict[str, float]:
        return {name: read_psi_some_avg10(path) for name, path in self._files.items()}

    def close(self) -> None:
        pass


# -- the backend process and its children ----------------------------------------------------------


class ProcessSource:
    """CPU, RSS, threads and file descriptors of ``--pid`` and all its descendants."""

    name = "process"

    def __init__(self, pid: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        try:
            self._root = psutil.Process(pid)
        except psutil.NoSuchProcess:
            raise ValueError(f"--pid: no process {pid}") from None
        self._clock = clock
        self._tree: list[psutil.Process] = [self._root]
        self._tree_at = -float("inf")
        self._cpu_last: dict[int, float] = {}
        self._cpu_t: float | None = None

    def _refresh_tree(self, now: float) -> None:
        if now - self._tree_at < PROC_TREE_REFRESH_S:
            return
        self._tree_at = now
        try:
            self._tree = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            self._tree = [self._root]

    def read(self, now: float) -> dict[str, float]:
        if not self._root.is_running():
            raise RuntimeError(f"process {self._root.pid} has exited")
        self._refresh_tree(now)
        cpu_delta, rss, threads, fds = 0.0, 0.0, 0.0, 0.0
        seen: dict[int, float] = {}
        for proc in self._tree:
            try:
                with proc.oneshot():
                    ct = proc.cpu_times()
                    rss += proc.memory_info().rss
                    threads += proc.num_threads()
                    fds += proc.num_fds()
            except psutil.Error:
                continue  # a child that exited since the last tree refresh
            cpu = ct.user + ct.system
            # Per-process deltas: a child that exits takes its total with it, which a plain
            # difference of sums would read as negative CPU.
            cpu_delta += max(cpu - self._cpu_last.get(proc.pid, cpu), 0.0)
            seen[proc.pid] = cpu
        out = {"proc_rss_bytes": rss, "proc_threads": threads, "proc_open_files": fds}
        if self._cpu_t is not None and now > self._cpu_t:
            out["proc_cpu_util"] = cpu_delta / (now - self._cpu_t)
        self._cpu_last, self._cpu_t = seen, now
        return out

    def close(self) -> None:
        pass


# -- cgroups v1 and v2 -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CgroupMount:
    mountpoint: Path
    root: str  # the cgroup path this mount shows at its top (not "/" inside some containers)
    version: int
    controllers: frozenset[str]


def cgroup_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[CgroupMount]:
    """Every cgroup (v1) and cgroup2 mount, from ``proc(5)`` mountinfo."""
    mounts = []
    with open(mountinfo) as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) < 5 or len(rfields) < 3 or rfields[0] not in ("cgroup", "cgroup2"):
                continue
            version = 2 if rfields[0] == "cgroup2" else 1
            controllers = frozenset(rfields[2].split(",")) if version == 1 else frozenset()
            mounts.append(CgroupMount(Path(fields[4]), fields[3], version, controllers))
    return mounts


@dataclass(frozen=True, slots=True)
class CgroupDirs:
    """The directories holding one cgroup's files, per layout and v1 controller."""

    v2: Path | None
    cpu: Path | None  # v1 cpu controller (cpu.stat, cpu.cfs_*)
    cpuacct: Path | None
    memory: Path | None
    prefer_v1: bool  # the user named a v1 directory

    @property
    def any(self) -> bool:
        return any(d is not None for d in (self.v2, self.cpu, self.cpuacct, self.memory))


def resolve_cgroup(spec: str, mounts: Sequence[CgroupMount]) -> CgroupDirs:
    """Find ``spec`` (a cgroup path or a directory under a cgroup mount) on every layout."""
    path = Path(spec)
    holders = [m for m in mounts if path == m.mountpoint or m.mountpoint in path.parents]
    named = max(holders, key=lambda m: len(m.mountpoint.parts)) if holders else None
    if named is not None:
        inside = path.relative_to(named.mountpoint)
        rel = "/" if inside == Path(".") else f"/{inside}"
    else:
        rel = "/" + spec.strip("/")

    def on(m: CgroupMount) -> Path | None:
        inner = rel
        if named is None and m.root != "/" and (rel == m.root or rel.startswith(m.root + "/")):
            inner = rel[len(m.root) :] or "/"  # /proc/PID/cgroup paths include the mount's root
        d = m.mountpoint / inner.lstrip("/")
        return d if d.is_dir() else None

    def v1(controller: str) -> Path | None:
        return next(
            (d for m in mounts if m.version == 1 and controller in m.controllers if (d := on(m))), None
        )

    v2 = next((d for m in mounts if m.version == 2 if (d := on(m))), None)
    dirs = CgroupDirs(v2, v1("cpu"), v1("cpuacct"), v1("memory"), named is not None and named.version == 1)
    if not dirs.any:
        raise ValueError(f"--cgroup: {spec!r} is not a cgroup on any mounted hierarchy")
    return dirs


def _read_int(path: Path) -> int:
    with open(path) as fh:
        return int(fh.read().strip())


def _read_keyed(path: Path) -> dict[str, int]:
    with open(path) as fh:
        return {k: int(v) for k, v in (line.split() for line in fh if line.strip())}


def _cpu_max(path: Path) -> float:
    """v2 ``cpu.max``: ``"QUOTA PERIOD"`` or ``"max PERIOD"``; cores, 0 when unlimited."""
    with open(path) as fh:
        quota, _, period = fh.read().strip().partition(" ")
    return 0.0 if quota == "max" else int(quota) / int(period or 100000)


class CgroupSource:
    """CPU use, quota and throttling, memory use and limit, and PSI of one cgroup.

    ``cg_mem_limit_frac`` is usage over the effective limit: the cgroup's own, or the host's
    memory when it has none (so 1.0 always means "no memory left to this cgroup").
    """

    name = "cgroup"

    def __init__(self, dirs: CgroupDirs) -> None:
        self.dirs = dirs
        self._readers: list[Callable[[dict[str, float], float], None]] = []
        self._cpu, self._thr_n, self._thr_t = Rate(), Rate(), Rate()
        self._host_mem = float(psutil.virtual_memory().total)
        self._plan()
        self.psi: PsiSource | None = None
        if dirs.v2 is not None:
            with contextlib.suppress(SourceAbsent):  # v2 without PSI (kernel psi=0): cg_psi_* missing
                self.psi = PsiSource(dirs.v2, "cg", ".pressure")
        if not self._readers and self.psi is None:
            raise SourceAbsent(f"cgroup {dirs} has no readable cpu or memory files")

    def _first(self, *candidates: Path | None) -> Path | None:
        existing = [p for p in candidates if p is not None and p.exists()]
        return existing[0] if existing else None

    def _plan(self) -> None:
        """Pick, once, the file each value comes from; the layout the user named goes first."""
        d = self.dirs

        def pair(v1: Path | None, v2: Path | None) -> tuple[Path | None, Path | None]:
            return (v1, v2) if d.prefer_v1 else (v2, v1)

        v2 = d.v2
        v2_stat = v2 / "cpu.stat" if v2 else None
        usage = self._first(*pair(d.cpuacct / "cpuacct.usage" if d.cpuacct else None, v2_stat))
        if usage is not None:
            scale = 1e-9 if usage.name == "cpuacct.usage" else 1e-6
            key = None if usage.name == "cpuacct.usage" else "usage_usec"
            self._readers.append(lambda out, now: self._usage(out, now, usage, key, scale))
        self._plan_throttling(pair(d.cpu / "cpu.stat" if d.cpu else None, v2_stat))
        quota_v1 = d.cpu / "cpu.cfs_quota_us" if d.cpu else None
        quota = self._first(*pair(quota_v1, v2 / "cpu.max" if v2 else None))
        if quota is not None:
            self._readers.append(lambda out, now: out.__setitem__("cg_cpu_quota_cores", self._quota(quota)))
        mem_v1 = d.memory if d.memory else None
        cur = self._first(*pair(mem_v1 / "memory.usage_in_bytes" if mem_v1 else None,
                                v2 / "memory.current" if v2 else None))  # fmt: skip
        if cur is not None:
            limit = cur.parent / ("memory.max" if cur.name == "memory.current" else "memory.limit_in_bytes")
            self._readers.append(lambda out, now: self._memory(out, cur, limit))

    def _plan_throttling(self, stats: tuple[Path | None, Path | None]) -> None:
        # v2 cpu.stat has throttled_usec only with the cpu controller on; v1 cpu.stat has nanoseconds.
        for stat in stats:
            if stat is None or not stat.exists():
                continue
            keys = _read_keyed(stat)
            for key, scale in (("throttled_usec", 1e-6), ("throttled_time", 1e-9)):
                if "nr_throttled" in keys and key in keys:
                    self._readers.append(functools.partial(self._throttled, path=stat, key=key, scale=scale))
                    return

    def _usage(self, out: dict[str, float], now: float, path: Path, key: str | None, scale: float) -> None:
        raw = _read_int(path) if key is None else _read_keyed(path)[key]
        _put_rate(out, "cg_cpu_util", self._cpu, raw * scale, now)

    def _throttled(self, out: dict[str, float], now: float, path: Path, key: str, scale: float) -> None:
        stat = _read_keyed(path)
        _put_rate(out, "cg_throttled_periods_per_s", self._thr_n, stat["nr_throttled"], now)
        _put_rate(out, "cg_throttled_seconds_per_s", self._thr_t, stat[key] * scale, now)

    @staticmethod
    def _quota(path: Path) -> float:
        if path.name == "cpu.max":
            return _cpu_max(path)
        quota = _read_int(path)
        return 0.0 if quota < 0 else quota / _read_int(path.parent / "cpu.cfs_period_us")

    def _memory(self, out: dict[str, float], current: Path, limit_path: Path) -> None:
        used = float(_read_int(current))
        limit = self._host_mem
        try:
            with open(limit_path) as fh:
                text = fh.read().strip()
            if text != "max" and int(text) < V1_UNLIMITED:
                limit = min(float(int(text)), limit)
        except (OSError, ValueError):
            pass  # the root cgroup has no limit file: the host's memory is the limit
        out["cg_mem_used_bytes"] = used
        out["cg_mem_limit_frac"] = used / limit if limit > 0 else 0.0

    def read(self, now: float) -> dict[str, float]:
        out: dict[str, float] = {}
        for reader in self._readers:
            reader(out, now)
        if self.psi is not None:
            out.update(self.psi.read(now))
        return out

    def close(self) -> None:
        pass


# -- GPU (NVML) ---------------------------------------------------------------------------------------


class GpuSource:
    """Mean utilisation and memory use of all GPUs through NVML (``nvidia-ml-py``), if present."""

    name = "gpu"

    def __init__(self) -> None:
        try:
            import pynvml  # type: ignore[import-not-found]
        except ImportError:
            raise SourceAbsent("nvidia-ml-py is not installed") from None
        try:
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as exc:
            raise SourceAbsent(f"NVML unavailable: {exc}") from None
        if count == 0:
            pynvml.nvmlShutdown()
            raise SourceAbsent("no GPU")
        self._nvml: Any = pynvml
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]

    def read(self, now: float) -> dict[str, float]:
        nv = self._nvml
        util = [nv.nvmlDeviceGetUtilizationRates(h).gpu / 100.0 for h in self._handles]
        mems = [nv.nvmlDeviceGetMemoryInfo(h) for h in self._handles]
        total = sum(m.total for m in mems)
        return {
            "gpu_util": sum(util) / len(util),
            "gpu_mem_used_frac": sum(m.used for m in mems) / total if total else 0.0,
        }

    def close(self) -> None:
        self._nvml.nvmlShutdown()


# -- application gauges ------------------------------------------------------------------------------


class AppSource:
    """In-flight, queue length and workers scraped from the backend's Prometheus endpoint."""

    name = "app"

    def __init__(self, url: str, *, timeout_s: float) -> None:
        self.scraper = Scraper(url, timeout_s=timeout_s)

    def read(self, now: float) -> dict[str, float]:
        return self.scraper.read()

    def close(self) -> None:
        self.scraper.close()


# -- putting them together ---------------------------------------------------------------------------


class Sampler:
    """Reads every source once per tick into ``BASE_METRICS`` order, naming what is missing."""

    def __init__(self, sources: Sequence[Source]) -> None:
        self.sources = list(sources)
        self._failing: dict[str, str] = {}  # source name -> last error, while it fails
        self._index = {name: i for i, name in enumerate(schema.BASE_METRICS)}

    def sample(self, now: float) -> tuple[list[float], tuple[str, ...]]:
        values = [0.0] * len(schema.BASE_METRICS)
        seen = [False] * len(schema.BASE_METRICS)
        for source in self.sources:
            got = self._read(source, now)
            for name, value in got.items():
                i = self._index[name]
                if math.isfinite(value):  # a non-finite reading is a missing one: never sent
                    values[i], seen[i] = float(value), True
        missing = tuple(name for name, ok in zip(schema.BASE_METRICS, seen, strict=True) if not ok)
        return values, missing

    def _read(self, source: Source, now: float) -> dict[str, float]:
        # Never crash the agent: any error becomes missing metrics, logged on change only.
        try:
            got = source.read(now)
        except Exception as exc:
            err = f"{type(exc).__name__}: {exc}"
            if source.name not in self._failing:
                log.warning("source %s failing, its metrics are sent as missing: %s", source.name, err)
            self._failing[source.name] = err
            return {}
        if self._failing.pop(source.name, None) is not None:
            log.info("source %s recovered", source.name)
        return got

    def close(self) -> None:
        for source in self.sources:
            try:
                source.close()
            except Exception as exc:  # closing is best effort; the agent is exiting
                log.debug("closing %s: %s", source.name, exc)


def build_sources(
    *, pid: int | None, cgroup: str | None, scrape: str | None, interval_s: float
) -> list[Source]:
    """Every source this machine and these flags allow; each absent one is logged once.

    Bad flags (a pid that does not exist, a cgroup path found on no mount, a malformed scrape URL)
    raise ``ValueError`` naming the flag: that is a configuration error, not an absent source.
    """
    factories: list[tuple[str, Callable[[], Source]]] = [
        ("host", HostSource),
        ("host_psi", lambda: PsiSource(Path("/proc/pressure"), "host")),
        ("gpu", GpuSource),
    ]
    if pid is not None:
        proc = ProcessSource(pid)
        factories.append(("process", lambda: proc))
    if cgroup is not None:
        dirs = resolve_cgroup(cgroup, cgroup_mounts())
        factories.append(("cgroup", lambda: CgroupSource(dirs)))
    if scrape is not None:
        app = AppSource(scrape, timeout_s=max(0.05, min(1.0, interval_s / 2)))
        factories.append(("app", lambda: app))
    sources: list[Source] = []
    for name, factory in factories:
        try:
            sources.append(factory())
        except SourceAbsent as exc:
            log.info("source %s absent, its metrics are sent as missing: %s", name, exc)
        except OSError as exc:
            log.info("source %s unreadable, its metrics are sent as missing: %s", name, exc)
    for flag, given in (("--pid", pid), ("--cgroup", cgroup), ("--scrape", scrape)):
        if given is None:
            log.info("no %s given: its metrics are sent as missing", flag)
    return sources
