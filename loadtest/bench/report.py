"""Writing a bench's outputs: ``results.json``, ``results.md``, the plots and the raw per-request arrays."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from loadtest.loadgen import LoadResult
from loadtest.testbed.scenario import Scenario

from . import aggregate, plots
from .workload import Workload

log = logging.getLogger("presage.bench")


def scenario_json(scenario: Scenario) -> dict[str, Any]:
    return dataclasses.asdict(scenario)


def write_outputs(
    results: dict[str, Any],
    runs: Mapping[str, LoadResult],
    workload: Workload,
    scenario: Scenario,
    out: Path,
) -> dict[str, Path]:
    """Everything under ``out``; returns the paths by kind. A plot that fails is logged, not fatal."""
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    labels = {p["name"]: p.get("label") or p["name"] for p in results["policies"]}
    backends = [b.id for b in scenario.backends]
    raw = out / "raw"
    raw.mkdir(exist_ok=True)
    for name, result in runs.items():
        np.savez_compressed(
            raw / f"{name}.npz", scheduled_s=result.scheduled_s, rtt_s=result.rtt_s, status=result.status,
            backend=result.backend.astype(str), dropped=result.dropped, sizes=result.sizes,
        )  # fmt: skip
    try:
        paths["latency_cdf"] = plots.latency_cdf(runs, labels, out / "latency_cdf.png")
        paths["timeline"] = plots.timeline(
            workload, scenario.episodes, backends, runs, labels, out / "timeline.png"
        )
    except Exception as exc:  # a figure is a by-product: the numbers must still be written
        log.warning("plots not written: %s: %s", type(exc).__name__, exc)
        results.setdefault("warnings", []).append(f"plots not written: {exc}")
    results["files"] = {k: p.name for k, p in paths.items()}
    paths["json"] = write_json(results, out)
    paths["markdown"] = out / "results.md"
    paths["markdown"].write_text(markdown_document(results))
    return paths


def write_json(results: Mapping[str, Any], out: Path) -> Path:
    """``results.json`` (written again at the very end, when the phases' timing is known)."""
    path = out / "results.json"
    option = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    path.write_bytes(orjson.dumps(results, option=option))
    return path


def markdown_document(results: Mapping[str, Any]) -> str:
    """``results.md``: the command, the setting, the table and the plots."""
    sc = results["scenario"]
    caps = results.get("capabilities", {})
    model = results.get("model") or {}
    seeds = results["seeds"]
    lines = [
        f"# presage bench: scenario {sc['name']}",
        "",
        f"Command: `{results.get('command', 'presage bench')}`",
        "",
        f"Load: {sc['trace']['kind']} trace {sc['trace']['low_rps']:g}-{sc['trace']['high_rps']:g} req/s, "
        f"{sc['duration_s']:g} s per policy and round, {results.get('rounds') or 1} round(s), "
        f"{len(sc['backends'])} backends, "
        f"{len(sc['episodes'])} interference episodes; seeds: collect {seeds['collect']}, "
        f"evaluate {seeds['evaluate']}.",
        "",
        "Capabilities: " + ", ".join(f"{k}={v}" for k, v in caps.items()),
        "",
    ]
    if model:
        acc = model.get("accuracy")
        lines += [
            f"Model: {model.get('family', '-')}, held-out accuracy "
            f"{'-' if acc is None else f'{acc:.3f}'} (1 - MAPE), {model.get('samples_used', '-')} samples.",
            "",
        ]
    lines.append(aggregate.markdown(results))
    files = results.get("files", {})
    if (results.get("rounds") or 1) > 1 and files:
        lines.append("The plots show each policy's first measured round.\n")
    for key in ("latency_cdf", "timeline"):
        if key in files:
            lines.append(f"![{key}]({files[key]})\n")
    return "\n".join(lines)
