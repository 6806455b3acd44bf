"""Instructions per request of the proxy worker, ``predicted`` next to ``round_robin``: the cost
of deciding, measured without the host's noise.

``python -m loadtest.bench_instructions [--model DIR] [--duration S] [--repeat N] [--out FILE]``

Requests/s on a shared 2-core machine swings by a factor of several within minutes (other tenants
take the CPU: see ``/proc/stat``'s steal column), so ``bench_predicted``'s requests/s ratio needs
many paired slices and still moves by +-0.05 between runs. The number of instructions the worker
executes per request does not depend on who else runs: this benchmark counts them with valgrind's
callgrind (``valgrind`` must be installed: ``apt-get install valgrind``), repeatable to ~0.2 %.

Setup as in ``bench_predicted``'s requests/s part: one ``presage proxy`` worker in front of two
tiny loopback backends named ``--ids`` (ids no bundle was trained on), agents' vectors refreshed
in an embedded Redis every 0.5 s, the OOD guard and the decision-time breaker opened wide and the
live-accuracy safeguard off, so that every request takes the model path. The proxy runs under
``valgrind --tool=callgrind --instr-atstart=no`` (about 50x slower once instrumented, so the
closed-loop load answers a few hundred requests a second); for each policy:

1. instrumentation on (``callgrind_control -i on``), a warm-up load;
2. counters zeroed, ``--duration`` seconds with no load, dumped: the per-second background (the
   feature store reading Redis and binding snapshots, metrics, health checks);
3. counters zeroed, ``--duration`` seconds of load, dumped.

Instructions per request = (load-window total - idle-window total) / requests answered in the load
window. Subtracting the idle window removes work that depends on time, not on requests: under
valgrind a second holds ~50x fewer requests than at full speed, so it would otherwise weigh 50x too
much per request. At full speed that background costs (idle Ir/s) / (requests/s) per request, a
few hundred instructions at 10,000 requests/s; the table prints it.

Instructions are not time (cache misses, branch mispredictions and the kernel's share are not in
them: the system time per request, ~15-20 % of the worker's CPU, is the same for both policies), so
the ratio reads as the user-space CPU ``predicted`` adds per request. Requests/s is measured by
``bench_predicted``; this is the noise-free view of the same cost.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from metrics_agent import schema
from predictor_runtime.bundle import load_bundle

from .bench_dataplane import Settings, backend_processes, free_port, load
from .bench_predicted import (
    VectorPusher,
    admin_json,
    bundle_or_trained,
    metrics_text,
    requests_answered,
    two_ids,
    typical_vector,
)

POLICIES = ("round_robin", "predicted")
START_TIMEOUT_S = 300.0  # a proxy starting under valgrind imports numpy and onnxruntime slowly
CONNECTIONS = 16
# the bench's predicted settings (bench_predicted.proxy): every request takes the model path
PREDICTED_CONFIG = {"predicted": {"ood_tolerance": 1e9, "min_budget_s": 1.0, "min_accuracy": 0}}


def callgrind_total(path: Path) -> int:
    """The total instruction count (``Ir``) of a callgrind dump: its ``totals:`` (or ``summary:``)
    line. Raises ValueError if the file has neither."""
    for line in path.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise ValueError(f"{path}: no totals line (not a callgrind dump?)")


def per_request(load_ir: int, idle_ir: int, requests: float) -> float:
    """Instructions per request: the load window's total less the idle window's (same length)."""
    if requests <= 0:
        raise ValueError("no request was answered in the load window")
    return (load_ir - idle_ir) / requests


def summarise(runs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Medians per policy and the ratio predicted / round_robin of instructions per request."""
    out: dict[str, Any] = {"policies": {}}
    for policy, rows in runs.items():
        out["policies"][policy] = {
            "ir_per_request": statistics.median(r["ir_per_request"] for r in rows),
            "idle_ir_per_s": statistics.median(r["idle_ir_per_s"] for r in rows),
            "runs": rows,
        }
    rr = out["policies"]["round_robin"]["ir_per_request"]
    pred = out["policies"]["predicted"]["ir_per_request"]
    out["ratio"] = pred / rr
    out["extra_ir_per_request"] = pred - rr
    return out


class Callgrind:
    """``callgrind_control`` on one process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __call__(self, *args: str) -> None:
        command = ["callgrind_control", *args, str(self.pid)]
        subprocess.run(command, check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def proxy_under_callgrind(
    urls: Sequence[str], ids: Sequence[str], policy: str, redis_url: str, bundle_dir: Path, workdir: Path
) -> Iterator[tuple[str, str, Path]]:
    """One ``presage proxy`` (one worker, in process) under callgrind, instrumentation off until
    asked; yields (data-plane address, admin address, dump file prefix)."""
    config = workdir / f"{policy}.json"
    config.write_text(json.dumps(PREDICTED_CONFIG))
    port, admin = free_port(), free_port()
    prefix = workdir / f"callgrind.{policy}"
    command = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={prefix}.%p",
        sys.executable, "-m", "proxy.main",
        "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}", "--policy", policy,
        "--workers", "1", "--access-log", "off", "--drain-delay-s", "0", "--grace-s", "2",
        "-c", str(config), "--redis", redis_url, "--model", str(bundle_dir),
    ]  # fmt: skip
    for name, url in zip(ids, urls, strict=True):
        command += ["--backend", f"{name}={url}"]
    log = (workdir / f"valgrind.{policy}.log").open("w")
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"proxy under valgrind exited with {proc.returncode} (see {log.name})")
            ready = f"http://127.0.0.1:{admin}/readyz"
            with contextlib.suppress(OSError), urllib.request.urlopen(ready, timeout=2) as r:
                if r.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("proxy under valgrind did not become ready")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", f"127.0.0.1:{admin}", prefix
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def window(control: Callgrind, prefix: Path, admin: str, name: str, action: Any) -> tuple[int, float]:
    """Zero the counters, run ``action``, dump: (instructions, requests answered meanwhile)."""
    control("-z")
    before = requests_answered(metrics_text(admin))
    action()
    after = requests_answered(metrics_text(admin))
    existing = set(prefix.parent.glob(prefix.name + ".*"))
    control("-d")
    for _ in range(100):  # the dump is written by the instrumented process itself
        new = set(prefix.parent.glob(prefix.name + ".*")) - existing
        if new:
            break
        time.sleep(0.1)
    else:
        raise RuntimeError("callgrind wrote no dump")
    dump = max(new, key=os.path.getmtime)
    time.sleep(0.5)  # let it finish writing
    kept = dump.with_name(f"{prefix.name}.{name}.out")
    dump.rename(kept)
    return callgrind_total(kept), after - before


def measure(policy: str, urls: Sequence[str], ids: Sequence[str], redis_url: str, bundle_dir: Path,
            workdir: Path, duration_s: float) -> dict[str, float]:  # fmt: skip
    with proxy_under_callgrind(urls, ids, policy, redis_url, bundle_dir, workdir) as (address, admin, prefix):
        pid = int(admin_json(admin, "/v1/backends")["worker_pid"])
        control = Callgrind(pid)
        control("-i", "on")
        load([address], Settings(duration_s=max(4.0, duration_s / 3), connections=CONNECTIONS))  # warm
        idle_ir, _ = window(control, prefix, admin, "idle", lambda: time.sleep(duration_s))
        result: dict[str, Any] = {}
        run = lambda: result.update(load([address], Settings(duration_s=duration_s, connections=CONNECTIONS)))  # noqa: E731
        load_ir, answered = window(control, prefix, admin, "load", run)
    return {
        "ir_per_request": per_request(load_ir, idle_ir, answered),
        "idle_ir_per_s": idle_ir / duration_s,
        "requests": answered,
        "requests_per_s_under_valgrind": answered / duration_s,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_instructions", description=__doc__)
    parser.add_argument("--model", type=Path, help="bundle directory (default: train one on synthetic data)")
    parser.add_argument("--out", type=Path, default=Path("out/bench_instructions.json"))
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per window (default 20)")
    parser.add_argument("--repeat", type=int, default=1, help="measurements per policy (median)")
    parser.add_argument("--ids", default="lb1,lb2", help="the two loopback backends' ids (bench_predicted's)")
    args = parser.parse_args(argv)
    ids = two_ids(parser, args.ids)
    if args.duration <= 0 or args.repeat < 1:
        parser.error("--duration must be > 0 and --repeat >= 1")
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        tools = ", ".join(missing)
        print(f"bench_instructions: {tools} not found (apt-get install valgrind)", file=sys.stderr)
        return 2
    from proxy.redis_conn import start_embedded

    runs: dict[str, list[dict[str, float]]] = {p: [] for p in POLICIES}
    with tempfile.TemporaryDirectory(prefix="presage-bench-instructions-") as tmp:
        workdir = Path(tmp)
        bundle_dir = bundle_or_trained(args.model, workdir)
        bundle = load_bundle(bundle_dir)
        values = typical_vector(bundle, schema.feature_names(schema.DEFAULT_WINDOWS))
        with start_embedded(workdir / "redis") as redis_server, backend_processes(2) as addresses:
            urls = [f"http://{a}" for a in addresses]
            with VectorPusher(redis_server.url, ids, values):
                for rep in range(args.repeat):
                    for policy in POLICIES if rep % 2 == 0 else POLICIES[::-1]:
                        row = measure(policy, urls, ids, redis_server.url, bundle_dir, workdir, args.duration)
                        runs[policy].append(row)
                        print(f"  {policy:12s} {row['ir_per_request']:10,.0f} instructions/request "
                              f"({row['requests']:.0f} requests, idle {row['idle_ir_per_s']:,.0f}/s)",
                              flush=True)  # fmt: skip
    summary = summarise(runs)
    summary["model"] = {"family": bundle.family, "inputs": len(bundle.feature_names)}
    summary["duration_s"] = args.duration
    pol = summary["policies"]
    print("\n| policy | instructions / request (median) | background instructions / s |")
    print("|---|---:|---:|")
    for policy in POLICIES:
        print(f"| {policy} | {pol[policy]['ir_per_request']:,.0f} | {pol[policy]['idle_ir_per_s']:,.0f} |")
    print(f"\npredicted / round_robin: {summary['ratio']:.3f} "
          f"({summary['extra_ir_per_request']:+,.0f} instructions a request)")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
