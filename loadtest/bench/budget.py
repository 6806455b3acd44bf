"""Fitting a bench into its wall-time budget by compressing the scenario's timeline.

A bench is ``runs = contenders (+ 1 collection)`` load runs of the scenario's length, each with a
few seconds of start-up, lead and settling, plus fixed costs (testbed start, training, plots). When
that exceeds the budget (``--quick``: 3 minutes on 2 cores; the full run: 20 minutes), every time of
the scenario is scaled by the same factor — run length, episode starts and lengths, the trace's
period — so each policy still meets every noisy neighbour and every rate change, in the same order
and proportions, only faster. Rates, sizes and capacities are not touched (the load per second is
the same). The factor is printed and recorded; ``--budget 0`` turns fitting off.
"""

from __future__ import annotations

import dataclasses

from loadtest.testbed.scenario import Scenario

RUN_OVERHEAD_S = 3.0  # per run: target start and stop, lead, drain (measured: 2.5-3 s)
FIXED_S = 18.0  # testbed start and stop, the 3-s warm-up, plots, results
MIN_RUN_S = 5.0


def fitted_duration_s(budget_s: float, runs: int, train_s: float, settle_s: float) -> float:
    """The longest run that keeps ``runs`` runs plus fixed costs within ``budget_s``."""
    per_run = (budget_s - FIXED_S - train_s) / max(runs, 1) - RUN_OVERHEAD_S - settle_s
    return max(per_run, MIN_RUN_S)


def compress(scenario: Scenario, factor: float) -> Scenario:
    """Every time of ``scenario`` times ``factor`` (0 < factor <= 1); the name says so."""
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"compression factor must be in (0, 1], got {factor}")
    if factor == 1.0:
        return scenario
    episodes = tuple(
        dataclasses.replace(e, start_s=e.start_s * factor, duration_s=e.duration_s * factor)
        for e in scenario.episodes
    )
    trace = dataclasses.replace(scenario.trace, period_s=scenario.trace.period_s * factor)
    return dataclasses.replace(
        scenario,
        name=f"{scenario.name} (x{factor:.2f} time)",
        duration_s=scenario.duration_s * factor,
        episodes=episodes,
        trace=trace,
    )


def fit(scenario: Scenario, budget_s: float | None, runs: int, train_s: float, settle_s: float) -> Scenario:
    """``scenario`` compressed so that the bench fits ``budget_s`` (unchanged when it already does)."""
    if not budget_s:
        return scenario
    longest = fitted_duration_s(budget_s, runs, train_s, settle_s)
    if scenario.duration_s <= longest:
        return scenario
    return compress(scenario, longest / scenario.duration_s)
