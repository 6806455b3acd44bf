"""What a run is judged by: RTT percentiles, wasted capacity, and the predictor's accuracy.

Statistics cover the requests after the warm-up share (arrival order), all of which complete.

**Wasted capacity** is the share of the fleet's worker-time that sat idle while requests waited in
some queue: ``integral(min(I(t), Q(t)) dt) / (C * T)`` over the measured window, ``I`` the idle
workers, ``Q`` the requests queued (arrived, not started), ``C`` the workers in the fleet. With FCFS
backends a queued request means its own backend is saturated, so every such idle worker is one a
better routing decision could have used. ``utilisation`` is ``integral(busy) / (C * T)``.

**Accuracy** of ``predicted`` (ARCHITECTURE.md: ``1 - MAPE``), for the chosen backend:

* ``expected_accuracy`` against the true expected completion time at dispatch (the quantity the
  noise is calibrated on). It is not the nominal accuracy: the winner is the lowest of the noisy
  predictions, so its errors lean to under-prediction (the winner's curse), whose percentage error
  is at most 1, while the log-normal tail of large over-predictions stays with the losers; at low
  nominal accuracy the chosen predictions therefore read *more* accurate (0.59 at nominal 0.5 on
  the default scenario);
* ``live_accuracy`` against the observed RTT, with every error clipped at 10 (1000 %) exactly as
  the proxy's ``LiveAccuracy`` does: what the live safeguard would measure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .engine import RunResult

MAX_APE = 10.0  # proxy.predict.live_accuracy.LiveAccuracy's default clip


@dataclass(frozen=True, slots=True)
class Summary:
    policy: str
    accuracy: float | None  # nominal predictor accuracy (predicted only)
    requests: int
    mean_s: float
    p50_s: float
    p95_s: float
    p99_s: float
    wasted_capacity: float
    utilisation: float
    expected_accuracy: float | None
    live_accuracy: float | None
    live_ape_std: float | None
    wall_s: float

    def as_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)


def summarize(result: RunResult) -> Summary:
    wl = result.setup.workload
    warm = int(result.setup.scenario.warmup * wl.n)
    rtt = result.rtt[warm:]
    p50, p95, p99 = np.percentile(rtt, [50.0, 95.0, 99.0]).tolist()
    workers = int(result.setup.world.servers.sum())
    t0, t1 = float(wl.arrival[warm]), float(wl.arrival[-1])
    wasted, util = capacity_use(wl.arrival, result.start, result.done, workers, t0, t1)
    expected_acc, live_acc, live_std = accuracies(result, warm)
    return Summary(
        policy=result.policy,
        accuracy=result.accuracy,
        requests=int(rtt.shape[0]),
        mean_s=float(rtt.mean()),
        p50_s=p50,
        p95_s=p95,
        p99_s=p99,
        wasted_capacity=wasted,
        utilisation=util,
        expected_accuracy=expected_acc,
        live_accuracy=live_acc,
        live_ape_std=live_std,
        wall_s=result.wall_s,
    )


def capacity_use(
    arrival: np.ndarray, start: np.ndarray, done: np.ndarray, workers: int, t0: float, t1: float
) -> tuple[float, float]:
    """``(wasted capacity, utilisation)`` over ``[t0, t1]``, from the run's event times."""
    if t1 <= t0:
        return 0.0, 0.0
    n = arrival.shape[0]
    times = np.concatenate((arrival, start, start, done))
    d_queued = np.concatenate((np.ones(n), -np.ones(n), np.zeros(2 * n)))
    d_busy = np.concatenate((np.zeros(2 * n), np.ones(n), -np.ones(n)))
    order = np.argsort(times, kind="stable")
    times = times[order]
    queued = np.cumsum(d_queued[order])[:-1]
    busy = np.cumsum(d_busy[order])[:-1]
    # The state after event k holds until event k+1; clip those spans to the window.
    dt = np.clip(times[1:], t0, t1) - np.clip(times[:-1], t0, t1)
    span = workers * (t1 - t0)
    wasted = float(np.dot(np.minimum(workers - busy, queued), dt)) / span
    return wasted, float(np.dot(busy, dt)) / span


def accuracies(result: RunResult, warm: int) -> tuple[float | None, float | None, float | None]:
    """``(expected_accuracy, live_accuracy, live_ape_std)``; all None for a policy without predictions."""
    pred = result.extras.get("pred_s")
    if pred is None or pred.shape[0] != result.done.shape[0]:
        return None, None, None
    pred = pred[warm:]
    expected = result.extras["expected_s"][warm:]
    observed = result.rtt[warm:]
    expected_acc = 1.0 - float(np.mean(np.abs(pred - expected) / expected))
    live_ape = np.minimum(np.abs(pred - observed) / observed, MAX_APE)
    return expected_acc, 1.0 - float(np.mean(live_ape)), float(np.std(live_ape))
