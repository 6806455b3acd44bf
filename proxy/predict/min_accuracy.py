"""The default live-accuracy floor of the ``predicted`` policy.

Below this rolling accuracy (1 - MAPE of the chosen backend's prediction against the RTT then
observed, ``proxy.predict.live_accuracy``) the proxy stops trusting the model and routes by
``peak_ewma``. The value is the simulator's break-even: the live accuracy at which ``predicted``
stops beating the best heuristic (``presage simulate --sweep --replicas 3 --write-threshold``,
``loadtest/sim/results/threshold.json`` key ``default_min_accuracy``). A test keeps the two equal.
"""

from __future__ import annotations

DEFAULT_MIN_ACCURACY = 0.54
