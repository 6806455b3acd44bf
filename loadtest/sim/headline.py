"""Writing the headline result, ``results/threshold.json`` (read by ``threshold``), and the rule
that turns it into the proxy's default live-accuracy floor.

The proxy's ``predicted`` policy falls back to ``peak_ewma`` when its rolling live accuracy drops
below ``proxy.predict.min_accuracy.DEFAULT_MIN_ACCURACY``. Falling back pays exactly when the model
routes worse than ``peak_ewma`` would, so the floor is the live accuracy at the break-even *against
``peak_ewma``* (``FALLBACK``), not against the best heuristic (Prequal, which the proxy does not
have: with that bar, a model between the two break-evens would be replaced by something worse).
On top goes a margin for the noise of the rolling estimate: ``MARGIN_SIGMAS`` standard errors of a
mean over ``LiveAccuracy``'s default window (``ape_std / sqrt(window)``), rounded up to 0.01, so a
model that only looks as good as the fallback by luck of the window is not kept ("do no harm").
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import math
from pathlib import Path
from typing import Any

from proxy.predict.live_accuracy import LiveAccuracy

from .sensitivity import Point
from .sweep import FALLBACK, SweepResult

RESULTS = Path(__file__).with_name("results") / "threshold.json"
COMMAND = "presage simulate --sweep --replicas 3 --write-threshold"
MARGIN_SIGMAS = 2.0
LIVE_WINDOW: int = inspect.signature(LiveAccuracy).parameters["window"].default


def proxy_min_accuracy(live_break_even: float, live_ape_std: float, window: int = LIVE_WINDOW) -> float:
    """The proxy's default floor: ``ceil_0.01(live + MARGIN_SIGMAS * ape_std / sqrt(window))``."""
    margin = MARGIN_SIGMAS * live_ape_std / math.sqrt(window)
    return math.ceil(round((live_break_even + margin) * 100.0, 6)) / 100.0


def calibrated_live(live_median: float) -> tuple[float, float]:
    """(1 - MAPE, APE standard deviation) of the MAPE-optimal point estimate, given the live 1 - MAPE
    of a median-unbiased predictor, when observed / predicted is log-normal with spread ``s``.

    The simulator's predictor is median-unbiased; ``presage train`` ships predictions scaled by the
    MAPE-optimal constant (bundle ``target.scale``), which for log-normal noise is ``exp(-s^2)`` and
    gives ``MAPE = erf(s / sqrt 2)`` where the median gave ``exp(s^2 / 2) erf(s / sqrt 2)``; the
    APE's second moment is ``2 - 2 exp(-s^2 / 2)``. Same routing, a different level: the floor for a
    calibrated model is the same break-even in these units.
    """
    from .noise import sigma_for_accuracy

    s = sigma_for_accuracy(live_median)
    mape = math.erf(s / math.sqrt(2.0))
    second = 2.0 - 2.0 * math.exp(-s * s / 2.0)
    return 1.0 - mape, math.sqrt(max(second - mape * mape, 0.0))


def proxy_calibrated_min_accuracy(live_break_even: float, window: int = LIVE_WINDOW) -> float:
    """The floor for bundles with a calibrated scale: the break-even and margin in calibrated units."""
    live, std = calibrated_live(live_break_even)
    return proxy_min_accuracy(live, std, window)


def build(command: str, sweep: SweepResult, points: list[Point], replicas: int) -> dict[str, Any]:
    """The JSON document; raises ``ValueError`` when the run has no break-even to record."""
    th = sweep.thresholds["mean_s"]
    fb = sweep.thresholds[f"mean_s:{FALLBACK}"]
    for t in (th, fb):
        if t.accuracy is None or t.live_accuracy is None or t.live_ape_std is None:
            raise ValueError(
                f"predicted never beats {t.best_heuristic} here: no break-even accuracy to record"
            )
    assert th.accuracy is not None and th.live_accuracy is not None  # checked above, for mypy
    assert fb.accuracy is not None and fb.live_accuracy is not None and fb.live_ape_std is not None
    return {
        "command": command,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "replicas": replicas,
        "break_even_accuracy": round(th.accuracy, 4),
        "break_even_live_accuracy": round(th.live_accuracy, 4),
        "fallback_break_even_accuracy": round(fb.accuracy, 4),
        "fallback_break_even_live_accuracy": round(fb.live_accuracy, 4),
        "fallback_live_ape_std": round(fb.live_ape_std, 4),
        "live_window": LIVE_WINDOW,
        "margin_sigmas": MARGIN_SIGMAS,
        "proxy_default_min_accuracy": proxy_min_accuracy(fb.live_accuracy, fb.live_ape_std),
        "definitions": {
            "break_even_accuracy": "lowest nominal accuracy (1 - MAPE vs the true expected RTT at dispatch) "
            "at which predicted's mean RTT is below the best heuristic's",
            "*_live_accuracy": "predicted's live accuracy at that break-even: 1 - MAPE of the chosen "
            "backend's prediction vs the observed RTT, errors clipped at 10 (proxy LiveAccuracy)",
            "fallback_*": f"the same against {FALLBACK} alone, the policy the proxy falls back to",
            "proxy_default_min_accuracy": "fallback_break_even_live_accuracy + margin_sigmas * "
            "fallback_live_ape_std / sqrt(live_window), rounded up to 0.01: "
            "proxy.predict.min_accuracy.DEFAULT_MIN_ACCURACY",
            "wasted_capacity": "share of worker-time idle while requests queue at other backends",
        },
        **sweep.as_dict(),
        "sensitivity": [p.as_dict() for p in points],
    }


def write(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
    return path
