"""The default live-accuracy floor of the ``predicted`` policy, as the simulator measured it.

The proxy's ``predicted`` policy routes by ``peak_ewma`` while its rolling live accuracy
(``proxy.predict.live_accuracy.LiveAccuracy``: ``1 - MAPE`` of the chosen backend's prediction
against the RTT then observed, errors clipped at 10, over the last 500 requests) is below this
floor.

Where the value comes from: ``presage simulate --sweep --replicas 3 --write-threshold`` on the
simulator's default scenario (16 backends x 4 workers, capacities spread 4x, load 0.7, 2 proxies,
power of two choices, 3-class log-normal service with cv 0.5, 5 s interference episodes at 3x
every 20 s; three seeds), stored in ``loadtest/sim/results/threshold.json``:

* ``predicted`` beats ``peak_ewma`` (17.5 ms mean RTT) from nominal accuracy 0.453; the accuracy
  the proxy would *measure* there, against observed RTTs, is 0.396 (observed RTTs carry each
  request's own service-time noise, which no model can predict: a perfect model measures 0.603);
* the rolling mean over 500 requests has a standard error of 0.722 / sqrt(500) = 0.032 at that
  point, and two of them (0.065) go on top, so a model that only matches ``peak_ewma`` by the
  luck of its window is not kept: 0.396 + 0.065 = 0.461, rounded up to 0.47.

Why the break-even against ``peak_ewma`` and not against the best heuristic (Prequal, which beats
``predicted`` until nominal accuracy 0.756, live 0.540): the safeguard's alternative is
``peak_ewma``, so falling back pays exactly when the model routes worse than ``peak_ewma``; with the
Prequal bar a model between the two break-evens would be replaced by something worse.

The floor is a property of that simulated world. Its live break-even against ``peak_ewma`` ranges
from 0.22 (8 proxies) to 0.57 (load 0.9) across the simulator's sensitivity axes; re-derive it from
a scenario calibrated on the testbed (``presage simulate --calibrate SAMPLES --sweep ...``) before
trusting it elsewhere. ``tests/loadtest/sim/test_sim_threshold.py`` recomputes the value from
``threshold.json`` and fails when the two drift apart.
"""

from __future__ import annotations

DEFAULT_MIN_ACCURACY: float = 0.47

# The same floor for predictions scaled to the MAPE-optimal level (``presage train`` calibrates a
# bundle on validation data, ``target.scale``, and the proxy refits that level on live traffic by
# default, ``predictor_runtime.calibration``): scaling moves every prediction by the same factor,
# so routing is unchanged while the measured 1 - MAPE rises. In those units the break-even 0.396
# is 0.513 (log-normal noise: MAPE = erf(s / sqrt 2) instead of
# exp(s^2 / 2) erf(s / sqrt 2); ``loadtest.sim.headline.calibrated_live``), the APE's standard
# deviation 0.385, so the floor is 0.513 + 2 x 0.385 / sqrt(500) = 0.547, rounded up to 0.55.
CALIBRATED_MIN_ACCURACY: float = 0.55


def floor_for(calibrated: bool) -> float:
    """The simulator's floor for live accuracy measured at the MAPE-optimal level (``calibrated``:
    the bundle's ``scale`` fitted by ``presage train``, or the proxy's live refit of it,
    ``predictor_runtime.calibration``) or at the model's raw level."""
    return CALIBRATED_MIN_ACCURACY if calibrated else DEFAULT_MIN_ACCURACY


# The default floor is relative to the model's own held-out accuracy (the bundle's ``accuracy``,
# measured by ``presage train`` on the latest samples): the safeguard exists for a model whose live
# accuracy has *dropped* (vPALs: a learned predictor is trusted as far as it still behaves as it
# did when assessed), and the absolute floor above did not transfer from the simulated world to
# the testbed. There, a LightGBM bundle with 0.53 held-out accuracy measured 0.46-0.49 live, under
# the simulator's 0.55, so the safeguard handed 82% of the decisions to peak-EWMA and predicted
# ended 1.45x HAProxy's mean RTT; the same bundle with the safeguard off ran at 0.57x HAProxy's
# mean in the same round (presage bench, full scenario; README). 1 - MAPE scores the level of a
# prediction, routing needs its ranking (Spearman 0.89 on that run), and how much accuracy pays
# depends on the world. Live accuracy moved 0.01-0.09 away from held-out accuracy across the
# testbed runs, and the 500-request window's standard error is about 0.02-0.03: a drop of more
# than DRIFT_TOLERANCE is a model that no longer behaves as assessed.
DRIFT_TOLERANCE: float = 0.10


def default_floor(held_out: float | None, calibrated: bool) -> float:
    """The floor when none is configured: ``held_out - DRIFT_TOLERANCE``, or the simulator's floor
    (``floor_for``) for a bundle that carries no held-out accuracy."""
    if held_out is None:
        return floor_for(calibrated)
    return held_out - DRIFT_TOLERANCE
