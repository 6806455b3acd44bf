"""Measure what one testbed backend serves at a given worker count and CPU quota.

``python -m loadtest.testbed.capacity [--size 256] [--duration 4] [--scenario quick] [--neighbour cpu:2]``

Each configuration runs alone: a one-backend ``Testbed`` (its own cgroup and quota, no agents), then
a closed loop of ``2 * workers + 2`` keep-alive connections (``loadtest.dataplane_load``: raw asyncio
protocols, so the client takes little CPU from the backend) asking for ``/work?size=N`` for
``--duration`` seconds. Closed-loop throughput with more connections than workers is the saturation
throughput: the capacity ``mu = min(workers, quota, cores) / work(size)``. With ``--neighbour KIND:N``
the same runs happen beside a noisy neighbour (N stress-ng workers of KIND in the backend's cgroup),
which measures what an interference episode takes away. Prints a table and writes
``out/testbed_capacity.json``. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loadtest.dataplane_load import LoadRun, closed_loop
from loadtest.testbed import imaging
from loadtest.testbed.scenario import (
    EPISODE_KINDS,
    BackendSpec,
    Episode,
    Scenario,
    SizeMix,
    TraceSpec,
    load_scenario,
)
from loadtest.testbed.stack import Testbed

# (workers, quota cores) measured by default: scaling with workers, then with the quota
DEFAULT_GRID: tuple[tuple[int, float | None], ...] = (
    (1, None), (2, None), (4, None), (4, 1.0), (2, 0.6), (2, 0.3),
)


def one_backend(
    spec: BackendSpec, size: int, neighbour: tuple[str, int] | None, duration_s: float
) -> Scenario:
    run_s = duration_s + 10.0  # the load's warm-up and drain included
    episodes = () if neighbour is None else (Episode(spec.id, 0.0, run_s, neighbour[0], neighbour[1]),)
    return Scenario(
        name=f"capacity-{spec.id}", backends=(spec,), episodes=episodes, trace=TraceSpec("constant", 1, 1),
        duration_s=run_s, slo_p95_s=1.0, sizes=SizeMix(((size, 1.0),)), seed=1,
    )


async def measure(spec: BackendSpec, size: int, duration_s: float, workdir: Path,
                  neighbour: tuple[str, int] | None = None) -> dict[str, Any]:
    async with Testbed(one_backend(spec, size, neighbour, duration_s), workdir, agents=False) as tb:
        (_, url), = tb.backends
        if neighbour is not None:
            tb.start_interference(time.time())
            await asyncio.sleep(1.0)  # stress-ng up and its workers forked
        host_port = urlsplit(url)
        run = LoadRun([(host_port.hostname or "127.0.0.1", host_port.port or 80)], f"/work?size={size}",
                      connections=2 * spec.workers + 2)
        used0, t0 = tb.cpu_usage_s(spec.id), time.monotonic()
        try:
            result = await closed_loop(run, duration_s)
        finally:
            run.close()
        used1, t1 = tb.cpu_usage_s(spec.id), time.monotonic()
        # cores the backend's group really used under load: the quota binds when this equals it
        cores_used = (used1 - used0) / (t1 - t0) if used0 is not None and used1 is not None else None
        return {
            "id": spec.id, "workers": spec.workers, "cpu_quota_cores": spec.cpu_quota_cores,
            "work_mult": spec.work_mult, "size": size, "cpu_limits": tb.capabilities["cpu_limits"],
            "neighbour": None if neighbour is None else f"{neighbour[0]}:{neighbour[1]}",
            "episodes": [r.status for r in tb.episode_runs()],
            "work_s": tb.size_work_s[size], "cores_used": cores_used, **result,
        }


def _neighbour(text: str) -> tuple[str, int]:
    kind, _, workers = text.partition(":")
    if kind not in EPISODE_KINDS or not workers.isdigit() or not 1 <= int(workers) <= 16:
        kinds = ", ".join(EPISODE_KINDS)
        raise argparse.ArgumentTypeError(f"expected KIND:WORKERS with KIND in {kinds} and 1..16 workers")
    return kind, int(workers)


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _table(rows: list[dict[str, Any]]) -> str:
    ncpu = float(len(os.sched_getaffinity(0)))
    head = f"{'backend':<16} {'workers':>7} {'quota':>6} {'mult':>5} {'size':>5} {'req/s':>8} " \
           f"{'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'cores':>6} {'req/cpu-s':>9} {'ideal':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        quota = "none" if r["cpu_quota_cores"] is None else f"{r['cpu_quota_cores']:g}"
        cores = min(r["workers"], r["cpu_quota_cores"] or ncpu, ncpu)
        ideal = cores / (r["work_s"] * r["work_mult"])  # min(workers, quota, cores) / work
        per_cpu_s = r["rps"] / r["cores_used"] if r["cores_used"] else None
        name = r["id"] + (f" +{r['neighbour']}" if r["neighbour"] else "")
        lines.append(
            f"{name:<16} {r['workers']:>7} {quota:>6} {r['work_mult']:>5g} {r['size']:>5} "
            f"{r['rps']:>8.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['errors']:>6} "
            f"{_num(r['cores_used'], '.2f'):>6} {_num(per_cpu_s, '.0f'):>9} {ideal:>7.1f}"
        )
    return "\n".join(lines)


def _specs(args: argparse.Namespace) -> list[BackendSpec]:
    if args.scenario:
        return list(load_scenario(args.scenario).backends)
    return [BackendSpec(f"w{w}-q{q or 'none'}", w, q, 1.0, 0.0) for w, q in DEFAULT_GRID]


async def _run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="presage-capacity-") as tmp:
        for i, spec in enumerate(_specs(args)):
            row = await measure(spec, args.size, args.duration, Path(tmp) / str(i), args.neighbour)
            rows.append(row)
            print(f"  {spec.id}: {row['rps']:.1f} req/s", file=sys.stderr, flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.testbed.capacity",
                                description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=imaging.DEFAULT_SIDE, help="image side of every request")
    p.add_argument("--duration", type=float, default=4.0, help="seconds of closed-loop load per backend")
    p.add_argument("--scenario", help="measure this scenario's backends (default: a workers x quota grid)")
    p.add_argument("--neighbour", type=_neighbour, help="KIND:WORKERS stress-ng beside each backend")
    p.add_argument("--out", type=Path, default=Path("out/testbed_capacity.json"))
    args = p.parse_args(argv)
    imaging.check_side(args.size)
    if not 0.5 <= args.duration <= 60:
        p.error("--duration must be 0.5..60 s")
    started = time.time()
    rows = asyncio.run(_run(args))
    print(_table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"started": started, "size": args.size, "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
