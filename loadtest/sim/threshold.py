"""The break-even accuracy of ``predicted``: the default of the proxy's live-accuracy safeguard.

Produced by one documented run of the default scenario (``DEFAULT_SCENARIO``, i.e. ``Scenario()``;
the exact command is stored in the file under ``command``)::

    presage simulate --sweep --replicas 3 --write-threshold

which writes ``results/threshold.json`` (committed). Two figures come out of it:

* ``BREAK_EVEN_ACCURACY``: the lowest nominal accuracy (``1 - MAPE`` against the true expected
  RTT) at which ``predicted`` has a lower mean RTT than the best heuristic;
* ``DEFAULT_MIN_ACCURACY``: the accuracy ``predicted`` then shows *as the proxy measures it* —
  ``1 - MAPE`` of the chosen backend's prediction against the observed RTT, errors clipped at 10,
  exactly ``proxy.predict.live_accuracy.LiveAccuracy``. Observed RTTs carry the request's own
  service-time noise, which no model can predict, so this is lower than the nominal figure; it is
  the number to compare a live accuracy with. Below it, in the simulated world, routing by the
  model loses to the heuristics and the safeguard should fall back.
* ``FALLBACK_BREAK_EVEN_ACCURACY`` and ``FALLBACK_MIN_ACCURACY``: the same against ``peak_ewma``
  alone, the policy the safeguard actually falls back to (lower: Prequal is the harder bar).

The proxy must not import ``loadtest`` (ARCHITECTURE.md), so ``proxy.balancer.predicted`` carries
the value as its own ``DEFAULT_MIN_ACCURACY`` constant, to be kept equal to this one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .headline import COMMAND, RESULTS
from .scenario import Scenario

DEFAULT_SCENARIO = Scenario()


def load(path: Path = RESULTS) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing; produce it with `{COMMAND}`") from None
    return data


_DATA = load()
BREAK_EVEN_ACCURACY = float(_DATA["break_even_accuracy"])
DEFAULT_MIN_ACCURACY = float(_DATA["default_min_accuracy"])
FALLBACK_BREAK_EVEN_ACCURACY = float(_DATA["fallback_break_even_accuracy"])
FALLBACK_MIN_ACCURACY = float(_DATA["fallback_min_accuracy"])
