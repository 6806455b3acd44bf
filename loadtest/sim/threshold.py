"""The break-even accuracy of ``predicted``, and from it the proxy's live-accuracy floor.

Produced by one documented run of the default scenario (``DEFAULT_SCENARIO``, i.e. ``Scenario()``;
the exact command is stored in the file under ``command``)::

    presage simulate --sweep --replicas 3 --write-threshold

which writes ``results/threshold.json`` (committed). The figures it holds:

* ``BREAK_EVEN_ACCURACY``: the lowest nominal accuracy (``1 - MAPE`` against the true expected
  RTT) at which ``predicted`` has a lower mean RTT than the best heuristic, the question the
  simulator was built to answer (Morpheus, arXiv 2510.20506); ``BREAK_EVEN_LIVE_ACCURACY``: the
  accuracy ``predicted`` then shows *as the proxy measures it*, ``1 - MAPE`` of the chosen
  backend's prediction against the observed RTT, errors clipped at 10, exactly
  ``proxy.predict.live_accuracy.LiveAccuracy``. Observed RTTs carry the request's own service-time
  noise, which no model can predict, so the live figure is the lower one.
* ``FALLBACK_BREAK_EVEN_ACCURACY`` / ``FALLBACK_BREAK_EVEN_LIVE_ACCURACY``: the same against
  ``peak_ewma`` alone, the policy the proxy's safeguard actually falls back to.
* ``PROXY_DEFAULT_MIN_ACCURACY``: the fallback break-even in live units plus a margin for the
  noise of the proxy's rolling window (``headline.proxy_min_accuracy``). It must equal
  ``proxy.predict.min_accuracy.DEFAULT_MIN_ACCURACY``, the constant the proxy reads (the proxy must
  not import ``loadtest``, ARCHITECTURE.md); ``tests/loadtest/sim/test_sim_threshold.py`` fails
  when the two drift apart.
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
BREAK_EVEN_LIVE_ACCURACY = float(_DATA["break_even_live_accuracy"])
FALLBACK_BREAK_EVEN_ACCURACY = float(_DATA["fallback_break_even_accuracy"])
FALLBACK_BREAK_EVEN_LIVE_ACCURACY = float(_DATA["fallback_break_even_live_accuracy"])
PROXY_DEFAULT_MIN_ACCURACY = float(_DATA["proxy_default_min_accuracy"])
