"""Writing the headline result, ``results/threshold.json`` (read by ``threshold``)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from .sensitivity import Point
from .sweep import FALLBACK, SweepResult

RESULTS = Path(__file__).with_name("results") / "threshold.json"
COMMAND = "presage simulate --sweep --replicas 3 --write-threshold"


def build(command: str, sweep: SweepResult, points: list[Point], replicas: int) -> dict[str, Any]:
    """The JSON document; raises ``ValueError`` when the run has no break-even to record."""
    th = sweep.thresholds["mean_s"]
    fb = sweep.thresholds[f"mean_s:{FALLBACK}"]
    if th.accuracy is None or th.live_accuracy is None or fb.accuracy is None or fb.live_accuracy is None:
        raise ValueError("predicted never beats the best heuristic here: no break-even accuracy to record")
    return {
        "command": command,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "replicas": replicas,
        "break_even_accuracy": round(th.accuracy, 4),
        "default_min_accuracy": round(th.live_accuracy, 4),
        "fallback_break_even_accuracy": round(fb.accuracy, 4),
        "fallback_min_accuracy": round(fb.live_accuracy, 4),
        "definitions": {
            "break_even_accuracy": "lowest nominal accuracy (1 - MAPE vs the true expected RTT at dispatch) "
            "at which predicted's mean RTT is below the best heuristic's",
            "default_min_accuracy": "predicted's live accuracy at the break-even: 1 - MAPE of the chosen "
            "backend's prediction vs the observed RTT, errors clipped at 10 (proxy LiveAccuracy)",
            "fallback_*": f"the same against {FALLBACK} alone, the policy the proxy falls back to",
            "wasted_capacity": "share of worker-time idle while requests queue at other backends",
        },
        **sweep.as_dict(),
        "sensitivity": [p.as_dict() for p in points],
    }


def write(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
    return path
