"""Wasted capacity and utilisation on hand-made schedules."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest.sim.metrics import capacity_use


def test_an_idle_worker_while_another_queue_waits_is_wasted() -> None:
    # Two backends, one worker each. A and B both go to backend 0: B waits [0, 2) while backend 1
    # idles the whole time.
    arrival = np.array([0.0, 0.0])
    start = np.array([0.0, 2.0])
    done = np.array([2.0, 3.0])
    wasted, util = capacity_use(arrival, start, done, workers=2, t0=0.0, t1=3.0)
    assert wasted == pytest.approx(2.0 / 6.0)
    assert util == pytest.approx(3.0 / 6.0)


def test_no_queue_no_waste_and_the_window_clips() -> None:
    arrival = np.array([0.0, 1.0, 4.0])
    start = arrival.copy()
    done = arrival + 2.0
    wasted, util = capacity_use(arrival, start, done, workers=2, t0=1.0, t1=5.0)
    assert wasted == 0.0
    # busy worker-time inside [1, 5]: [1,2] + [1,3] + [4,5] = 1 + 2 + 1
    assert util == pytest.approx(4.0 / 8.0)


def test_queued_requests_beyond_idle_workers_waste_only_the_idle_ones() -> None:
    # One busy worker of three; four requests queued behind it: only two workers can be wasted.
    arrival = np.zeros(5)
    start = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    done = start + 1.0
    wasted, _ = capacity_use(arrival, start, done, workers=3, t0=0.0, t1=1.0)
    assert wasted == pytest.approx(2.0 / 3.0)
