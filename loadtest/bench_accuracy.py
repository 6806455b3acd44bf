"""RTT-predictor accuracy on a held-out *later run* of the testbed, one row per scenario.

``python -m loadtest.bench_accuracy [--scenario NAME|FILE[,...]] [--out DIR] [--budget S] [--seed N]``

For each scenario (default ``interference``; ``--scenario interference,full`` reports the two
regimes side by side):

1. **record** two runs through the bench's own collection phase (``loadtest.bench.phases``:
   a ``presage proxy`` routing by peak-EWMA with half of the requests explored at random and every
   request recorded, the interference schedule restarted with each pass):
   the *training run*, the bench's collection passes (seeds ``seed``, ``seed + 1000``, ...), and a
   separate *later run* on seed ``seed + 1`` (the bench's evaluation arrivals), recorded after it;
2. **train** with ``presage train`` on the training run, as the bench does (same inputs excluded,
   same model families), whatever the pipeline then selects;
3. **assess** the exported bundle on every usable sample of the later run through the proxy's
   ``Scorer`` (``predictor_runtime.train.holdout``): accuracy ``1 - MAPE``, the same with the
   proxy's live level refit replayed over the run, MAE, p95 APE, Spearman, the noise check on the
   later run, and the bundle's decision time (inference p50/p99 at the real
   batch size) as a share of the later run's median RTT (the issue: <= 1%).

The testbed runs only while recording (training and assessment happen after it stops). Prints a
table and writes ``DIR/accuracy.json`` (``DIR/<scenario>/`` keeps each scenario's samples, bundle
with its report, and logs). ``--budget S`` compresses each scenario's timeline so that its four
runs and training fit S seconds (``loadtest.bench.budget``); by default nothing is compressed.
Wrap it in ``flock /tmp/presage-testbed.lock`` on a shared machine. Exit codes: 0 done (whatever
the figures say), 1 a scenario failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from loadtest.bench import budget
from loadtest.bench.cli import COLLECT_PASSES, TRAIN_ESTIMATE_S, Progress, capabilities
from loadtest.bench.phases import Phases, Settings
from loadtest.bench.workload import make_workload
from loadtest.testbed.scenario import Scenario, load_scenario

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
DEFAULT_SCENARIOS = ("interference",)
TRAIN_TIMEOUT_S = 600.0  # a full-length recording trains on ~4x the bench's compressed one
SETTLE_S = 2.0


@dataclass(frozen=True)
class Job:
    scenario: Scenario
    seed: int
    out: Path


@dataclass(frozen=True)
class Plan:
    jobs: tuple[Job, ...]
    out: Path
    redis_url: str | None
    command: str


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.bench_accuracy", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--scenario", default=",".join(DEFAULT_SCENARIOS),
        help="built-in name or YAML file; a comma list runs each in turn (default interference)",
    )  # fmt: skip
    p.add_argument(
        "--out", default="out/bench-accuracy", help="output directory (default out/bench-accuracy)"
    )
    p.add_argument("--budget", type=float, default=0.0, help="seconds per scenario; compresses time (0: off)")
    p.add_argument(
        "--seed", type=int, help="training seed; the later run uses seed + 1 (default the scenario's)"
    )
    p.add_argument("--redis", help="use this Redis instead of an embedded one")
    return p


def plan_from_args(argv: Sequence[str]) -> Plan:
    """Parse and check the arguments; ``ValueError`` names the bad one."""
    args = build_parser().parse_args(argv)
    if args.budget < 0:
        raise ValueError(f"--budget: must be >= 0, got {args.budget}")
    names = [n.strip() for n in args.scenario.split(",") if n.strip()]
    if not names:
        raise ValueError("--scenario: no scenario named")
    out = Path(args.out)
    jobs = []
    for name in names:
        scenario = load_scenario(name)  # ScenarioError is a ValueError naming the problem
        runs = COLLECT_PASSES + 1
        train_s = TRAIN_ESTIMATE_S.get(scenario.name, 60.0)
        scenario = budget.fit(scenario, args.budget or None, runs, train_s, SETTLE_S)
        seed = scenario.seed if args.seed is None else args.seed
        jobs.append(Job(scenario, seed, out / Path(name).stem))
    if len({j.out for j in jobs}) != len(jobs):
        raise ValueError("--scenario: a scenario is named twice")
    return Plan(tuple(jobs), out, args.redis, "python -m loadtest.bench_accuracy " + " ".join(argv))


# -- one scenario ------------------------------------------------------------------------------


async def record(job: Job, redis_url: str | None, progress: Callable[[str], None]) -> dict[str, Any]:
    """The training run and the later run, recorded by the bench's collection phase."""
    from loadtest.testbed.stack import Testbed

    job.out.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        out=job.out, contenders=[], collect_seed=job.seed, eval_seed=job.seed + 1, settle_s=SETTLE_S,
        train_timeout_s=TRAIN_TIMEOUT_S,
    )  # fmt: skip
    testbed = Testbed(job.scenario, job.out / "testbed", redis_url=redis_url, agents=True)
    try:
        await testbed.start()
    except Exception:
        with contextlib.suppress(Exception):
            await testbed.stop()
        raise
    try:
        phases = Phases(job.scenario, settings, testbed, progress)
        first = make_workload(job.scenario, job.seed)
        await phases.warm_up(first)
        passes = [first] + [
            make_workload(job.scenario, job.seed + 1000 * i) for i in range(1, COLLECT_PASSES)
        ]
        train_run = await _collect(phases, passes, "train")
        later_run = await _collect(phases, [make_workload(job.scenario, job.seed + 1)], "later")
        caps = capabilities(testbed)
    finally:
        await testbed.stop()
    return {"train_run": train_run, "later_run": later_run, "capabilities": caps, "phases": phases}


async def _collect(phases: Phases, workloads: list[Any], name: str) -> dict[str, Any]:
    """``Phases.collect`` (which writes ``samples.jsonl``), its file and log kept under ``name``."""
    samples, figures = await phases.collect(workloads)
    if figures.get("ok", 0) == 0:
        raise RuntimeError(f"{name} run: no request was answered (see the logs under {phases.settings.out})")
    kept = samples.with_name(f"{name}.jsonl")
    samples.replace(kept)
    log = phases.settings.out / "logs" / "proxy-collect.log"
    with contextlib.suppress(OSError):
        log.replace(log.with_name(f"proxy-collect-{name}.log"))
    figures["seeds"] = [w.seed for w in workloads]
    figures["collect_s"] = phases.timing.get("collect_s")  # the phases' own entry is the latest run's
    figures["samples_file"] = str(kept)
    return figures


async def run_job(job: Job, redis_url: str | None, progress: Callable[[str], None]) -> dict[str, Any]:
    """Record, train, assess one scenario; returns its entry of ``accuracy.json``."""
    from predictor_runtime.train.holdout import assess_bundle

    started = time.monotonic()
    sc = job.scenario
    progress(
        f"scenario {sc.name}: {len(sc.backends)} backends, {sc.duration_s:g}s per run, "
        f"{COLLECT_PASSES} training passes (seed {job.seed}) + a later run (seed {job.seed + 1})"
    )
    rec = await record(job, redis_url, progress)
    phases: Phases = rec.pop("phases")
    train_path = Path(rec["train_run"]["samples_file"])
    later_path = Path(rec["later_run"]["samples_file"])
    model, info = await phases.train(train_path)
    if model is None:
        raise RuntimeError(f"training failed: {info.get('error')}")
    holdout = await asyncio.to_thread(assess_bundle, model, [str(later_path)])
    progress(
        f"{sc.name}: held-out accuracy {holdout.metrics['accuracy']:.4f} on {holdout.samples_used} samples"
    )
    return {
        "scenario": sc.name,
        "seeds": {"train": rec["train_run"]["seeds"], "later": rec["later_run"]["seeds"]},
        "train_run": rec["train_run"],
        "later_run": rec["later_run"] | regime(later_path),
        "model": info | {"path": str(model), "train_noise_check": _train_noise(model)},
        "holdout": holdout.as_dict(),
        "capabilities": rec["capabilities"],
        "timing": phases.timing | {"total_s": time.monotonic() - started},
    }


def regime(samples: Path) -> dict[str, Any]:
    """How much requests met others at their backend: the share dispatched to a backend this proxy
    had nothing in flight at, and the mean in-flight count there (``proxy_in_flight``)."""
    from predictor_runtime.train.dataset import build_dataset, read_samples

    ds = build_dataset(read_samples([str(samples)]), min_samples=1)
    if "proxy_in_flight" not in ds.names:
        return {}
    inflight = ds.columns(["proxy_in_flight"])[:, 0]
    return {"idle_share": float(np.mean(inflight == 0)), "mean_in_flight": float(np.mean(inflight))}


def _train_noise(model: Path) -> dict[str, Any] | None:
    try:
        meta = orjson.loads((model / "model.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return meta.get("training", {}).get("noise_check")


# -- the table ---------------------------------------------------------------------------------


def table(entries: Sequence[dict[str, Any]]) -> str:
    """Markdown: one row per scenario."""
    head = (
        "| scenario | training samples | later-run samples | idle at dispatch | model | accuracy, own "
        "test split | **accuracy, later run** | with the live level refit | MAE ms | p95 APE | Spearman "
        "| noise check, later run | median RTT ms | decision p50 / p99, % of median RTT |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for e in entries:
        if "error" in e:
            lines.append(f"| {e['scenario']} | failed: {e['error']} |" + " - |" * (head.count("|") - 3))
            continue
        h, m = e["holdout"], e["holdout"]["metrics"]
        share = h["decision_share"]
        lines.append(
            f"| {e['scenario']} | {e['model'].get('samples_used')} | {h['samples_used']} "
            f"| {_pct(e['later_run'].get('idle_share'))} | {h['family']} | {_pct(h['bundle_accuracy'])} "
            f"| **{_pct(m['accuracy'])}** | {_pct(h.get('calibrated', {}).get('accuracy'))} "
            f"| {m['mae_s'] * 1e3:.1f} | {m['p95_ape']:.2f} "
            f"| {m['spearman']:.2f} "
            f"| {_pct(h['noise']['accuracy'])} | {h['median_rtt_s'] * 1e3:.1f} "
            f"| {_pct(share.get('p50'), 2)} / {_pct(share.get('p99'), 2)} |"
        )
    return "\n".join(lines)


def _pct(v: float | None, digits: int = 1) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{100 * v:.{digits}f}%"


# -- the command -------------------------------------------------------------------------------


async def run(plan: Plan, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for job in plan.jobs:
        try:
            entries.append(await run_job(job, plan.redis_url, progress))
        except Exception as exc:  # one scenario failing must not lose the other's figures
            progress(f"{job.scenario.name}: FAILED: {type(exc).__name__}: {exc}")
            entries.append({"scenario": job.scenario.name, "error": f"{type(exc).__name__}: {exc}"[:600]})
        write_json(plan, entries)
    return entries


def write_json(plan: Plan, entries: Sequence[dict[str, Any]]) -> Path:
    plan.out.mkdir(parents=True, exist_ok=True)
    path = plan.out / "accuracy.json"
    doc = {
        "command": plan.command,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "target": {"accuracy": 0.9, "decision_share_of_median_rtt": 0.01},
        "scenarios": list(entries),
    }
    option = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    path.write_bytes(orjson.dumps(doc, option=option))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        plan = plan_from_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error
        return int(exc.code or 0)
    except ValueError as exc:
        print(f"bench_accuracy: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    try:
        entries = asyncio.run(run(plan, Progress()))
    except KeyboardInterrupt:
        return 130
    print()
    print(table(entries))
    print(f"\nresults: {plan.out / 'accuracy.json'}")
    return EXIT_FAILED if any("error" in e for e in entries) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
