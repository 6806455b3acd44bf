"""Does a request's RTT residual carry over to the next requests at its backend?

``python -m loadtest.residual_memory SAMPLES [SAMPLES ...] [--alphas 0.05,0.1,0.2,0.3,0.5]
[--max-in-flight 3] [--out out/residual_memory.json]``

The noise check (``predictor_runtime.train.assess.cell_ceiling``) bounds any model of (backend,
request class, in-flight count): requests alike in all three still differ in RTT, and the best
constant per cell scores what it scores. A model could only beat that bound with information the
cell does not hold. The one the proxy always has is the recent past: if a backend that just
answered slowly keeps answering slowly (a noisy neighbour's burst, a throttled period, a busy
host), the residual of one request predicts the next one's, and an online correction in the
spirit of Metronome's online learning would pay. This measures whether it would, on a recorded
samples file (``presage proxy --record``; the bench's ``later.jsonl``):

* per cell (chosen backend, request class, in-flight count at dispatch capped at
  ``--max-in-flight``), the MAPE-optimal constant, fitted on the rows themselves (the noise
  check's optimistic constant; cells of fewer than 5 rows are left out, as there);
* per backend, the lag-1 autocorrelation of the log residual ``log(rtt / constant)`` in dispatch
  order: near 0, the next request learns nothing from this one;
* 1 - MAPE of a causal correction: each request predicted by its cell's constant times
  ``exp(m)``, where ``m`` is an EWMA (weight ``alpha``) of the log residuals of the requests that
  had *completed* (dispatch + RTT) before it was dispatched, per backend ("backend") or over all
  backends ("host"). The proxy could compute exactly this; it wins over the constant only when
  residuals have memory.

Only successful requests (status < 500) count, as for live accuracy. Exit codes: 0 done, 2 bad
arguments or an unreadable samples file.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from predictor_runtime.samples import LOCAL_FEATURES, SampleFormatError, read_samples
from predictor_runtime.train.assess import accuracy_metrics, cell_constants

MIN_ROWS = 5  # as cell_ceiling: a constant fitted on fewer rows says nothing (cell_constants' default)
IN_FLIGHT = LOCAL_FEATURES[0]


@dataclass(frozen=True)
class Requests:
    """Successful requests in dispatch order."""

    ts: np.ndarray  # dispatch wall time (s)
    rtt: np.ndarray  # observed RTT (s)
    backend: list[str]
    cell: list[tuple[str, float, int]]  # (backend, request class, in-flight at dispatch, capped)


def load(path: Path, max_in_flight: int) -> Requests:
    rows: list[tuple[float, float, str, tuple[str, float, int]]] = []
    for s in read_samples(path):
        if s.status >= 500 or not s.rtt_s > 0:
            continue
        chosen = s.chosen_candidate()
        flight = 0
        if chosen is not None and IN_FLIGHT in s.local_names:
            flight = min(int(chosen.local[s.local_names.index(IN_FLIGHT)]), max_in_flight)
        rows.append((s.ts, s.rtt_s, s.chosen, (s.chosen, s.req_class, flight)))
    rows.sort(key=lambda r: r[0])
    return Requests(
        ts=np.array([r[0] for r in rows], dtype=np.float64),
        rtt=np.array([r[1] for r in rows], dtype=np.float64),
        backend=[r[2] for r in rows],
        cell=[r[3] for r in rows],
    )


def accuracy(predicted: np.ndarray, observed: np.ndarray) -> float:
    """1 - MAPE (``assess.accuracy_metrics``) over the rows where both are finite."""
    ok = np.isfinite(predicted) & np.isfinite(observed)
    if not ok.any():
        return math.nan
    return accuracy_metrics(observed[ok], predicted[ok])["accuracy"]


def lag1(values: np.ndarray) -> float:
    """Lag-1 autocorrelation of ``values`` (NaN with fewer than 3, or no variance)."""
    v = values[np.isfinite(values)]
    if len(v) < 3 or np.std(v[:-1]) == 0 or np.std(v[1:]) == 0:
        return math.nan
    return float(np.corrcoef(v[:-1], v[1:])[0, 1])


def corrected(req: Requests, const: np.ndarray, alpha: float, per_backend: bool) -> np.ndarray:
    """Each row's constant times exp(EWMA of the log residuals of the requests completed before
    its dispatch): what a proxy could predict online. A residual is known at dispatch + RTT."""
    if not 0.0 < alpha <= 1.0:
        raise ValueError("alpha must be in (0, 1]")
    residual = np.log(req.rtt / const)  # NaN for rows without a constant: never learnt from
    pending: list[tuple[float, str, float]] = []  # (completion time, scope, residual)
    level: dict[str, float] = {}
    out = np.empty(len(req.rtt))
    for i in range(len(req.rtt)):
        t = float(req.ts[i])
        while pending and pending[0][0] <= t:
            _, scope, e = heapq.heappop(pending)
            level[scope] = (1.0 - alpha) * level.get(scope, 0.0) + alpha * e
        scope = req.backend[i] if per_backend else ""
        out[i] = const[i] * math.exp(level.get(scope, 0.0))
        if math.isfinite(residual[i]):
            heapq.heappush(pending, (t + float(req.rtt[i]), scope, float(residual[i])))
    return out


def analyse(req: Requests, alphas: Sequence[float]) -> dict[str, Any]:
    const = cell_constants(req.cell, req.rtt, MIN_ROWS)
    residual = np.log(req.rtt / const)
    names = sorted(set(req.backend))
    backend = np.array(req.backend, dtype=object)
    return {
        "requests": len(req.rtt),
        "scored": int(np.isfinite(const).sum()),
        "noise_check": accuracy(const, req.rtt),
        "lag1": {b: lag1(residual[backend == b]) for b in names},
        "corrected": {
            scope: {str(a): accuracy(corrected(req, const, a, scope == "backend"), req.rtt) for a in alphas}
            for scope in ("backend", "host")
        },
    }


def floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not values or not all(0.0 < v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError("alphas must be in (0, 1]")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.residual_memory", description=__doc__)
    parser.add_argument("samples", nargs="+", type=Path, help="recorded samples (JSON lines)")
    parser.add_argument("--alphas", type=floats, default=[0.05, 0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--max-in-flight", type=int, default=3, help="cap of the cell's in-flight count")
    parser.add_argument("--out", type=Path, default=Path("out/residual_memory.json"))
    args = parser.parse_args(argv)
    if args.max_in_flight < 0:
        parser.error("--max-in-flight must be >= 0")
    results: dict[str, Any] = {}
    for path in args.samples:
        try:
            req = load(path, args.max_in_flight)
        except (OSError, SampleFormatError) as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 2
        results[str(path)] = r = analyse(req, args.alphas)
        lags = " ".join(f"{b} {v:+.2f}" for b, v in r["lag1"].items())
        print(f"\n{path}: {r['requests']} requests, {r['scored']} in cells of >= {MIN_ROWS}")
        print(f"  noise check (best constant per cell): {r['noise_check']:.1%}")
        print(f"  lag-1 autocorrelation of the log residual: {lags}")
        print("  | alpha | corrected per backend | corrected over all backends |")
        print("  |---:|---:|---:|")
        for a in args.alphas:
            per, host = r["corrected"]["backend"][str(a)], r["corrected"]["host"][str(a)]
            print(f"  | {a:g} | {per:.1%} | {host:.1%} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
