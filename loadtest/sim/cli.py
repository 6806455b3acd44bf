"""``presage simulate``: compare policies, sweep accuracy, find the break-even, measure the cost.

    presage simulate [SCENARIO FLAGS] [--policies LIST] [--accuracy A]        compare policies
    presage simulate --sweep [--replicas R] [--axes LIST|none] [--write-threshold [FILE]]
    presage simulate --scale [--scale-backends 10,100,1000] [--scale-requests N]

Scenario flags are the ``Scenario`` field names (``--service-cv 0.5``); ``-c FILE`` reads the same
keys from YAML; ``--calibrate SAMPLES`` fits service times and interference to recorded samples;
``--trace FILE`` drives arrivals by a rate trace. Every flag also reads ``PRESAGE_<FLAG>`` from the
environment (precedence: command line > environment > file > calibration > default). JSON and PNG
files go to ``--out``; a markdown summary is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .scenario import Scenario

# Scenario fields set through their own options (or not from the command line at all).
SPECIAL_FIELDS = {"service_quantiles", "trace", "classes"}
HELP: dict[str, str] = {
    "backends": "number of backends",
    "servers": "workers per backend (FCFS, c servers)",
    "heterogeneity": "fastest/slowest capacity ratio (log-uniform spread)",
    "load": "offered load, share of the fleet's time-averaged capacity",
    "requests": "requests to simulate",
    "warmup": "share of the first requests left out of the statistics",
    "service_mean_s": "mean service time of the lightest class at capacity 1, seconds",
    "service_dist": "lognormal | exponential | empirical (set by --calibrate)",
    "service_cv": "coefficient of variation of log-normal service times",
    "interference_on_s": "mean interference episode length, seconds (0: none)",
    "interference_off_s": "mean time between episodes, seconds",
    "slowdown": "service-time multiplier inside an episode",
    "proxies": "proxies, each with its own in-flight view",
    "interval_s": "agent report period, seconds",
    "delay_s": "report delay until the proxies see it, seconds",
    "choices": "candidates predicted scores per decision (0: all)",
    "view": "what predicted starts from: true | stale",
    "inflight_penalty": "predicted cost * (1 + penalty * local in-flight)",
    "probes": "Prequal probes per decision",
    "rif_quantile": "Prequal hot/cold RIF quantile",
    "ewma_tau_s": "peak-EWMA decay time, seconds",
    "seed": "random seed (the whole run is a function of it)",
}


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(args_list)
    try:
        apply_env(parser, args, os.environ)
        scenario = resolve_scenario(args, os.environ)
        return run(args, scenario, "presage simulate " + shlex.join(args_list))
    except (ValueError, OSError) as exc:
        print(f"presage simulate: error: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="presage simulate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-c", "--config", help="YAML file of scenario keys")
    p.add_argument("--calibrate", metavar="SAMPLES", help="recorded samples (JSON lines) to calibrate from")
    p.add_argument("--psi-threshold", type=float, help="CPU PSI %% that marks an episode (calibration; 10)")
    p.add_argument("--trace", help="rate trace CSV (t_s,scale)")
    p.add_argument("--classes", help="request classes FACTOR:SHARE,... (default 1:0.6,3:0.3,9:0.1)")
    group = p.add_argument_group("scenario")
    for f in dataclasses.fields(Scenario):
        if f.name in SPECIAL_FIELDS:
            continue
        kind = type(getattr(Scenario(), f.name))
        group.add_argument("--" + f.name.replace("_", "-"), type=kind, help=HELP.get(f.name))
    p.add_argument("--out", help="directory for JSON and PNG files (default out/sim)")
    p.add_argument("--policies", help="compare mode: comma-separated policies (default: all)")
    p.add_argument("--accuracy", type=float, help="compare mode: accuracy of predicted (default 0.9)")
    p.add_argument("--sweep", action="store_true", help="accuracy sweep, break-even and sensitivity")
    p.add_argument("--replicas", type=int, help="seeds averaged per point (default 1)")
    p.add_argument("--axes", help="sensitivity axes, comma-separated, or none (default: all)")
    p.add_argument("--steps", type=int, help="bisection steps per sensitivity point (default 6)")
    p.add_argument(
        "--write-threshold",
        nargs="?",
        const="",
        metavar="FILE",
        help="write the headline JSON (default loadtest/sim/results/threshold.json)",
    )
    p.add_argument("--scale", action="store_true", help="cost benchmark at 10/100/1000 backends")
    p.add_argument("--scale-backends", help="comma-separated backend counts (default 10,100,1000)")
    p.add_argument("--scale-requests", type=int, help="requests per scale point (default 1000000)")
    p.add_argument("--scale-policies", help="comma-separated policies for --scale")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


def apply_env(parser: argparse.ArgumentParser, args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """Fill every option left unset on the command line from ``PRESAGE_<FLAG>``."""
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        raw = environ.get("PRESAGE_" + action.dest.upper())
        current = getattr(args, action.dest)
        if raw is None or (current is not None and current is not False):
            continue
        if isinstance(action, argparse._StoreTrueAction):
            setattr(args, action.dest, raw.strip().lower() in ("1", "true", "yes", "on"))
            continue
        convert: Callable[[str], Any] = action.type if callable(action.type) else str
        try:
            setattr(args, action.dest, convert(raw))
        except ValueError:
            raise ValueError(f"PRESAGE_{action.dest.upper()}: bad value {raw!r}") from None


def resolve_scenario(args: argparse.Namespace, environ: Mapping[str, str]) -> Scenario:
    base = Scenario()
    if args.calibrate:
        from .calibrate import calibrate

        cal = calibrate(args.calibrate, args.psi_threshold if args.psi_threshold is not None else 10.0)
        base = cal.apply(base)
        args.calibration = cal.as_dict()
    mapping: dict[str, Any] = dict(_read_config(args.config)) if args.config else {}
    for f in dataclasses.fields(Scenario):
        value = getattr(args, f.name, None)
        if value is not None:
            mapping[f.name] = value
    if isinstance(mapping.get("trace"), str):
        from .trace import load_trace

        mapping["trace"] = load_trace(mapping["trace"])
    return Scenario.from_mapping(mapping, base=base)


def _read_config(path: str) -> Mapping[str, Any]:
    import yaml

    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: want a mapping of scenario keys")
    return data


def run(args: argparse.Namespace, scenario: Scenario, command: str) -> int:
    from . import modes

    out = Path(args.out or "out/sim")
    out.mkdir(parents=True, exist_ok=True)
    log = None if args.quiet else _stderr
    if args.scale:
        text = modes.scale(args, scenario, out, log)
    elif args.sweep:
        text = modes.sweep(args, scenario, out, command, log)
    else:
        text = modes.compare(args, scenario, out, log)
    extra = getattr(args, "calibration", None)
    if extra is not None:
        (out / "calibration.json").write_text(json.dumps(extra, indent=1) + "\n")
    (out / "summary.md").write_text(text + "\n")
    print(text)
    return 0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
