"""Where one backend's RTT scatter comes from: the work, the CFS period of its quota, the host.

``python -m loadtest.bench_scatter [--sizes 128,256,512] [--quota 0.4] [--periods 10,100,none]
[--workers 3] [--work-mult 1.0] [--work imaging|checksum] [--repeat 3] [--n N] [--seed S]
[--out out/bench_scatter.json]``

What it measures. One ``presage backend`` alone in its own CPU cgroup (a run group of
``loadtest.testbed.cgroups``, joined before exec through the ``launch`` shim, as the testbed's
backends are), with ``--quota`` cores per CFS period of ``P`` ms (``none``: no quota), receives
requests of one size straight from this process: no proxy, no agent, no other backend. After 20
warm-up requests, N requests go one at a time, each after a random 0-20 ms gap (seeded), so that
requests start at a random phase of the period. Each run records the client's RTT and the backend's
``service_s``, ``cpu_s`` (the worker thread's CPU time) and ``queue_s`` per request, the group's
throttled periods and CPU use, and the host's steal (``/proc/stat``). Its figure is **1 - MAPE of
the best constant**: every RTT predicted by the MAPE-optimal constant of all N
(``predictor_runtime.train.assess.cell_ceiling`` on one cell, the noise check's figure for
requests that are all alike). The matrix (every size x period) runs ``--repeat`` times, sizes and
periods varying fastest so that the machine's drift spreads over every condition; per condition
the table gives each run's figure, their median, the RTT p10/p50/p90 of the median run (the upper
middle one for an even count), the range of throttled periods, and the medians of cores used and
steal.

Why. The README's accuracy section judges the predictor against the noise check (the best constant
per backend, class and in-flight count), which stays far under 90 % even without neighbours. Here
one backend is isolated, so what is left is the work itself, the quota's period and the host: the
``none`` rows are the scatter any model of (backend, size, in-flight) must live with on this
machine, and the quota rows show what the period adds to it.

How long. A run is N x (10 ms mean gap + RTT) plus about 2 s to start a backend and warm it up:
``--sizes 128,256,512 --periods 10,none --repeat 3`` took 2.0 min on this 2-core machine,
``--sizes 512 --periods 100 --repeat 3`` 0.4 min; so the defaults (three periods) about 3 min.

It needs a writable CPU cgroup (root) and exits 2 without one. Wrap it in
``flock /tmp/presage-testbed.lock`` on a shared machine: a testbed running beside it would become
part of what it measures. Exit codes: 0 done (whatever the figures say), 1 a backend failed,
2 bad arguments or no cgroups.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

from loadtest.testbed import cgroups, imaging
from loadtest.testbed import work as work_kinds
from loadtest.testbed.procs import Child, launch_prefix, python_module
from predictor_runtime.train.assess import cell_ceiling

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
REPO_ROOT = Path(__file__).resolve().parents[1]
WARMUP = 20  # requests sent and discarded before each run: first-touch page faults, connection set-up
MAX_GAP_S = 0.02  # gap before each request, uniform in [0, MAX_GAP_S]: a random phase in a 10-ms period
MIN_N = 5  # cell_ceiling leaves out cells of fewer rows
START_TIMEOUT_S = 60.0
MIN_PERIOD_MS, MAX_PERIOD_MS = 1.0, 1000.0  # what the kernel accepts for cfs_period_us
NO_QUOTA_PERIOD_US = cgroups.PERIOD_US  # the period left on a group without a quota


class BenchError(RuntimeError):
    """A backend did not start or answered other than 200; the message says which and why."""


def default_n(size: int) -> int:
    """Requests per run: about 4 s of requests at each size (300 at 128 px, 200 at 256, 80 above)."""
    return 300 if size <= 128 else 200 if size <= 256 else 80


@dataclass(frozen=True, slots=True)
class Settings:
    sizes: tuple[int, ...]
    periods_ms: tuple[float | None, ...]  # None: no quota
    quota: float
    workers: int
    work_mult: float
    repeat: int
    n: int | None  # None: default_n(size)
    seed: int
    work: str = work_kinds.DEFAULT_KIND  # what a request does (loadtest.testbed.work)

    def requests(self, size: int) -> int:
        return self.n if self.n is not None else default_n(size)


# -- arguments ----------------------------------------------------------------------------------------


def _items(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"an empty item in {text!r}")
    if len(set(items)) != len(items):
        raise argparse.ArgumentTypeError(f"an item given twice in {text!r}")
    return items


def parse_sizes(text: str) -> tuple[int, ...]:
    """``128,256,512``: image sides in pixels, each within the backend's range, none twice."""
    sizes = []
    for item in _items(text):
        try:
            sizes.append(imaging.check_side(int(item)))
        except ValueError as exc:
            reason = str(exc) if item.lstrip("-").isdigit() else f"not a whole number of pixels: {item!r}"
            raise argparse.ArgumentTypeError(reason) from None
    if len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(f"a size given twice in {text!r}")
    return tuple(sizes)


def parse_periods(text: str) -> tuple[float | None, ...]:
    """``10,100,none``: CFS periods in ms (the kernel's 1..1000), ``none`` for no quota."""
    periods: list[float | None] = []
    for item in _items(text):
        if item.lower() == "none":
            periods.append(None)
            continue
        try:
            value = float(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a period in ms or 'none': {item!r}") from None
        if not MIN_PERIOD_MS <= value <= MAX_PERIOD_MS:  # also refuses nan
            raise argparse.ArgumentTypeError(f"a CFS period must be 1..1000 ms (got {item})")
        periods.append(value)
    if len(set(periods)) != len(periods):
        raise argparse.ArgumentTypeError(f"a period given twice in {text!r}")
    return tuple(periods)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0 (got {text})")
    return value


def _int_at_least(low: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low} (got {value})")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_scatter", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--sizes", type=parse_sizes, default=(128, 256, 512), help="image sides in px")
    p.add_argument("--quota", type=_positive_float, default=0.4, help="cores per period (default 0.4)")
    p.add_argument("--periods", type=parse_periods, default=(10.0, 100.0, None),
                   help="CFS periods in ms, 'none' for no quota (default 10,100,none)")  # fmt: skip
    p.add_argument("--workers", type=_int_at_least(1), default=3, help="backend worker threads (default 3)")
    p.add_argument("--work-mult", type=_positive_float, default=1.0, help="work per request multiplier")
    p.add_argument("--work", choices=sorted(work_kinds.KINDS), default=work_kinds.DEFAULT_KIND,
                   help=f"what a request does (default {work_kinds.DEFAULT_KIND})")
    p.add_argument("--repeat", type=_int_at_least(1), default=3, help="runs of the whole matrix (default 3)")
    p.add_argument("--n", type=_int_at_least(MIN_N), help="requests per run (default 300/200/80 by size)")
    p.add_argument("--seed", type=int, default=1, help="seed of the gaps (default 1)")
    p.add_argument("--out", type=Path, default=Path("out/bench_scatter.json"))
    return p


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, Path]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers > 256:
        parser.error(f"argument --workers: must be 1..256 (got {args.workers})")
    for period in args.periods:
        if period is not None and args.quota * period < 1.0:  # the kernel's smallest quota is 1 ms
            parser.error(f"argument --quota: {args.quota:g} cores of a {period:g}-ms period is under the "
                         "kernel's smallest quota (1 ms)")  # fmt: skip
    settings = Settings(args.sizes, args.periods, args.quota, args.workers, args.work_mult, args.repeat,
                        args.n, args.seed, args.work)  # fmt: skip
    return settings, args.out


# -- the summarising arithmetic --------------------------------------------------------------------


def best_constant_accuracy(rtt_s: Sequence[float]) -> float:
    """1 - MAPE when every RTT is predicted by the MAPE-optimal constant of them all."""
    rtt = np.asarray(rtt_s, dtype=np.float64)
    return float(cell_ceiling(rtt, [np.zeros(len(rtt))], min_rows=1)["accuracy"])


def percentiles_ms(values_s: Sequence[float]) -> list[float]:
    """p10, p50, p90 in ms."""
    return [float(x) * 1e3 for x in np.percentile(np.asarray(values_s, dtype=np.float64), [10, 50, 90])]


def run_figures(rtt_s: Sequence[float], service_s: Sequence[float]) -> dict[str, Any]:
    """The figures of one run from its per-request times."""
    outside = np.asarray(rtt_s, dtype=np.float64) - np.asarray(service_s, dtype=np.float64)
    return {
        "best_constant_accuracy": best_constant_accuracy(rtt_s),
        "rtt_ms_p10_p50_p90": percentiles_ms(rtt_s),
        "service_ms_p10_p50_p90": percentiles_ms(service_s),
        "outside_worker_ms_p10_p50_p90": percentiles_ms(outside),  # HTTP, event loop, hand-off, client
    }


def _median_or_none(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def summarise(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per condition (size, period), in the order first run: the median over its repeats of
    the best-constant figure, and the median run's RTT percentiles (upper middle for an even count)."""
    groups: dict[tuple[int, float | None], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["size"], run["period_ms"]), []).append(run)
    rows = []
    for (size, period), group in groups.items():
        accs = [r["best_constant_accuracy"] for r in group]
        middle = sorted(group, key=lambda r: r["best_constant_accuracy"])[len(group) // 2]
        throttled = [r["throttled_periods"] for r in group]
        rows.append({
            "size": size,
            "period_ms": period,
            "quota_cores": group[0]["quota_cores"],
            "runs": len(group),
            "accuracy_per_run": accs,
            "accuracy_median": statistics.median(accs),
            "median_run_repeat": middle["repeat"],
            "rtt_ms_p10_p50_p90": middle["rtt_ms_p10_p50_p90"],
            "throttled_periods_min_max": [min(throttled), max(throttled)],
            "cores_used_median": _median_or_none([r["cores_used"] for r in group]),
            "steal_pct_median": _median_or_none([r["steal_pct"] for r in group]),
        })  # fmt: skip
    return rows


def quota_label(quota: float | None, period_ms: float | None) -> str:
    return "none" if quota is None or period_ms is None else f"{quota:g}@{period_ms:g}ms"


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The markdown table of ``summarise``'s rows."""
    lines = [
        "| size px | quota | runs | 1 - MAPE of the best constant, per run (%) | median (%) "
        "| RTT p10/p50/p90 ms (median run) | throttled periods (min-max) | cores used (median) "
        "| steal % (median) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_run = " / ".join(f"{100 * a:.1f}" for a in r["accuracy_per_run"])
        rtt = "/".join(f"{x:.1f}" for x in r["rtt_ms_p10_p50_p90"])
        lo, hi = r["throttled_periods_min_max"]
        cores = "-" if r["cores_used_median"] is None else f"{r['cores_used_median']:.2f}"
        steal = "-" if r["steal_pct_median"] is None else f"{r['steal_pct_median']:.2f}"
        label = quota_label(r["quota_cores"], r["period_ms"])
        median = f"**{100 * r['accuracy_median']:.1f}**"
        lines.append(f"| {r['size']} | {label} | {r['runs']} | {per_run} | {median} | {rtt} | {lo}-{hi} "
                     f"| {cores} | {steal} |")  # fmt: skip
    return "\n".join(lines)


# -- one run -----------------------------------------------------------------------------------------


def steal_ticks() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs so far, from the first line of /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return fields[7], sum(fields)


def backend_env() -> dict[str, str]:
    """The testbed's environment for a backend (``Testbed._env``): the repository importable, one
    numpy thread (the worker pool is the parallelism)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    return env


async def start_backend(
    group: cgroups.BackendGroup, settings: Settings, size: int, workdir: Path
) -> tuple[Child, str]:
    """One ``presage backend`` born inside ``group``; returns it with its base URL once it listens."""
    ready = workdir / f"ready-{group.name}"
    argv = [
        *launch_prefix(join=group.procs_files),
        *python_module("proxy.cli", "backend", "--id", group.name, "--port", "0",
                       "--workers", str(settings.workers), "--work-mult", repr(settings.work_mult),
                       "--work", settings.work, "--warm", str(size), "--ready-file", str(ready)),
    ]  # fmt: skip
    log = workdir / f"backend-{group.name}.log"
    child = Child(f"backend {group.name}", argv, log, REPO_ROOT, backend_env())
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not child.alive():
            raise BenchError(f"backend {group.name} exited during start-up:\n{child.log_tail()}")
        url = ready.read_text().strip() if ready.exists() else ""
        if url:
            return child, url
        await asyncio.sleep(0.05)
    await child.stop()
    raise BenchError(f"backend {group.name} not listening after {START_TIMEOUT_S:.0f} s:\n{child.log_tail()}")


async def timed_request(session: aiohttp.ClientSession, url: str) -> tuple[float, float, float, float]:
    """(RTT, service, cpu, queue) seconds of one request."""
    t0 = time.perf_counter()
    async with session.get(url) as resp:
        raw = await resp.read()
    rtt = time.perf_counter() - t0
    if resp.status != 200:
        raise BenchError(f"{url}: status {resp.status}: {raw[:200]!r}")
    body = orjson.loads(raw)
    return rtt, body["service_s"], body["cpu_s"], body["queue_s"]


async def measure(group: cgroups.BackendGroup, url: str, n: int, rng: random.Random) -> dict[str, Any]:
    """Warm-up, then ``n`` sequential requests after random gaps, with the counters around them."""
    rows = []
    async with aiohttp.ClientSession() as session:
        for _ in range(WARMUP):
            await timed_request(session, url)
        throttled0, steal0, cpu0 = group.throttled(), steal_ticks(), group.cpu_usage_s()
        t0 = time.perf_counter()
        for _ in range(n):
            await asyncio.sleep(rng.uniform(0.0, MAX_GAP_S))
            rows.append(await timed_request(session, url))
        elapsed = time.perf_counter() - t0
        throttled1, steal1, cpu1 = group.throttled(), steal_ticks(), group.cpu_usage_s()
    rtt, service, cpu, queue = (list(col) for col in zip(*rows, strict=True))
    return {
        "throttled_periods": throttled1[0] - throttled0[0],
        "throttled_s": throttled1[1] - throttled0[1],
        "cores_used": None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / elapsed,
        "steal_pct": 100.0 * (steal1[0] - steal0[0]) / max(1, steal1[1] - steal0[1]),
        "measured_s": elapsed,
        "rtt_s": rtt,
        "service_s": service,
        "cpu_s": cpu,
        "queue_s": queue,
    }


async def run_one(groups: cgroups.RunGroups, settings: Settings, size: int, period_ms: float | None,
                  repeat: int, workdir: Path) -> dict[str, Any]:  # fmt: skip
    """One backend, one size, one period: a fresh group and a fresh process, stopped afterwards."""
    group = groups.create(f"r{len(groups.groups)}")
    quota = None if period_ms is None else settings.quota
    group.set_quota(quota, NO_QUOTA_PERIOD_US if period_ms is None else round(period_ms * 1000))
    rng = random.Random(f"{settings.seed}:{repeat}:{size}:{period_ms}")  # the same gaps for the same seed
    child, url = await start_backend(group, settings, size, workdir)
    try:
        raw = await measure(group, f"{url}/work?size={size}", settings.requests(size), rng)
    finally:
        await child.stop()
    n = len(raw["rtt_s"])
    head = {"size": size, "period_ms": period_ms, "quota_cores": quota, "repeat": repeat, "n": n}
    return {**head, **run_figures(raw["rtt_s"], raw["service_s"]), **raw}


def progress_line(run: dict[str, Any], settings: Settings) -> str:
    rtt = "/".join(f"{x:.1f}" for x in run["rtt_ms_p10_p50_p90"])
    cores = "-" if run["cores_used"] is None else f"{run['cores_used']:.2f}"
    label = quota_label(run["quota_cores"], run["period_ms"])
    return (f"  run {run['repeat'] + 1}/{settings.repeat} {run['size']} px {label}: "
            f"1 - MAPE {100 * run['best_constant_accuracy']:.1f} %, "
            f"RTT p10/p50/p90 {rtt} ms, throttled {run['throttled_periods']}, {cores} cores, "
            f"steal {run['steal_pct']:.2f} %")  # fmt: skip


async def run_matrix(settings: Settings, layout: cgroups.Layout, workdir: Path) -> list[dict[str, Any]]:
    """Every size x period, ``repeat`` times, sizes and periods varying fastest."""
    for stale in cgroups.remove_stale(layout):
        print(f"removed a stale testbed cgroup {stale}", flush=True)
    groups = cgroups.RunGroups(layout)
    runs = []
    try:
        for repeat in range(settings.repeat):
            for size in settings.sizes:
                for period in settings.periods_ms:
                    runs.append(await run_one(groups, settings, size, period, repeat, workdir))
                    print(progress_line(runs[-1], settings), flush=True)
    finally:
        await asyncio.to_thread(groups.remove)
    return runs


def main(argv: Sequence[str] | None = None, cgroup_root: Path = cgroups.CGROUP_ROOT) -> int:
    settings, out = parse_args(argv)
    try:
        layout = cgroups.detect(cgroup_root)
    except (cgroups.CgroupUnavailable, OSError) as exc:
        print("bench_scatter: needs a writable CPU cgroup (run as root) to put the backend under a CFS "
              f"quota: {exc}", file=sys.stderr)  # fmt: skip
        return EXIT_BAD_INPUT
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="presage-bench-scatter-") as tmp:
        try:
            runs = asyncio.run(run_matrix(settings, layout, Path(tmp)))
        except BenchError as exc:
            print(f"bench_scatter: {exc}", file=sys.stderr)
            return EXIT_FAILED
    rows = summarise(runs)
    elapsed = time.monotonic() - started
    counts = ", ".join(str(settings.requests(s)) for s in settings.sizes)
    sizes = ", ".join(str(s) for s in settings.sizes)
    gap = f"0-{MAX_GAP_S * 1e3:.0f} ms"
    print(f"\none backend, {settings.workers} workers, {settings.work} work x{settings.work_mult:g}, "
          "sequential requests "
          f"after a {gap} gap, n = {counts} at {sizes} px; {elapsed / 60:.1f} min\n")  # fmt: skip
    print(table(rows))
    result = {
        "settings": {**asdict(settings), "warmup": WARMUP, "max_gap_s": MAX_GAP_S,
                     "n_per_size": {str(s): settings.requests(s) for s in settings.sizes}},
        "host": {"cpus": os.cpu_count(), "kernel": platform.release(), "cgroup_version": layout.version},
        "elapsed_s": elapsed,
        "conditions": rows,
        "runs": runs,
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
