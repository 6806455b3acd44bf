"""The three things ``presage simulate`` does; each writes JSON and PNGs and returns markdown."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import headline, plots, report
from .policies import HEURISTICS
from .scale import BACKENDS, POLICIES, REQUESTS, one_core, scale_benchmark
from .scenario import Scenario
from .sensitivity import AXES, sensitivity
from .sweep import FALLBACK, Bench, accuracy_sweep

Log = Callable[[str], None] | None
DEFAULT_COMPARE: tuple[str, ...] = (*HEURISTICS, "predicted", "oracle")


def _csv(value: str | None, default: tuple[str, ...]) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else list(default)


def _dump(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n")


def compare(args: argparse.Namespace, scenario: Scenario, out: Path, log: Log) -> str:
    accuracy = 0.9 if args.accuracy is None else args.accuracy
    bench = Bench(scenario, args.replicas or 1, log)
    summaries = [bench.run(name, accuracy) for name in _csv(args.policies, DEFAULT_COMPARE)]
    _dump(out / "compare.json", {"scenario": scenario.as_dict(), "runs": [s.as_dict() for s in summaries]})
    plots.plot_compare(summaries, out / "compare.png")
    return "\n".join(["## Policies", report.scenario_line(scenario), "", report.summary_table(summaries)])


def sweep(args: argparse.Namespace, scenario: Scenario, out: Path, command: str, log: Log) -> str:
    replicas = args.replicas or 1
    result = accuracy_sweep(Bench(scenario, replicas, log))
    _dump(out / "sweep.json", result.as_dict())
    plots.plot_sweep(result, out)
    parts = [report.sweep_markdown(result)]
    axes = [] if args.axes == "none" else _csv(args.axes, tuple(AXES))
    if args.write_threshold is not None:
        headline.build(command, result, [], replicas)  # fails now, not after the sensitivity runs
    points = sensitivity(scenario, axes, replicas, args.steps or 6, log) if axes else []
    if points:
        _dump(out / "sweep.json", {**result.as_dict(), "sensitivity": [p.as_dict() for p in points]})
        plots.plot_sensitivity(points, out / "threshold_sensitivity.png")
        parts.append(report.sensitivity_markdown(points))
    if args.write_threshold is not None:
        document = headline.build(command, result, points, replicas)
        path = headline.write(Path(args.write_threshold or headline.RESULTS), document)
        parts.append(
            f"Wrote {path}: break-even accuracy {document['break_even_accuracy']} "
            f"(live {document['break_even_live_accuracy']}); against {FALLBACK} alone "
            f"{document['fallback_break_even_accuracy']} "
            f"(live {document['fallback_break_even_live_accuracy']}); "
            f"proxy default min accuracy {document['proxy_default_min_accuracy']} "
            "(proxy/predict/min_accuracy.py must say the same)"
        )
    return "\n\n".join(parts)


def scale(args: argparse.Namespace, scenario: Scenario, out: Path, log: Log) -> str:
    backends = [int(b) for b in _csv(args.scale_backends, tuple(map(str, BACKENDS)))]
    policies = _csv(args.scale_policies, POLICIES)
    requests = args.scale_requests or REQUESTS
    with one_core() as cpu:
        points = scale_benchmark(scenario, backends, requests, policies, log=log)
    _dump(
        out / "scale.json",
        {"cpu": cpu, "scenario": scenario.as_dict(), "points": [p.as_dict() for p in points]},
    )
    plots.plot_scale(points, out / "scale.png")
    return report.scale_markdown(points, cpu)
