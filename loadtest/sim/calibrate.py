"""Calibrating the simulated world from recorded training samples (``presage proxy --record``).

The samples file (``predictor_runtime.samples``) holds, per sampled request, the chosen backend,
its request class, the observed RTT and the feature vectors every candidate had at dispatch. From
it:

* **Service times per class.** Only *unloaded* dispatches measure service time rather than
  queueing: the proxy had nothing in flight to the backend (``proxy_in_flight == 0``) and, when
  the agent reports it, the backend had no queue (``app_queue_length == 0``), outside interference
  episodes. Backends differ in speed, so each RTT is first divided by its backend's speed (the
  median over that backend's unloaded requests of ``rtt / class median``); what remains is the
  per-class distribution at capacity 1, stored as a unit-mean quantile table (inverse-CDF
  sampling) with the class's mean and request share.
* **Interference.** A backend is in an episode when its CPU pressure stall (PSI ``some avg10``,
  cgroup first, else host) is at least ``psi_threshold`` percent. The slowdown is the ratio of
  median speed-normalised unloaded RTTs in and out of episodes; episode and gap lengths are the
  mean run lengths of that indicator along each backend's timeline (all candidates' vectors, so
  every backend is seen at every sample), censored first and last runs left out.

What cannot be measured (too few samples, no PSI feature) keeps the scenario's value and is named
in ``notes``. Capacity spread is reported (``observed_heterogeneity``) but not applied: the
simulated fleet is not the recorded one.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from predictor_runtime.samples import Sample, read_samples

from .scenario import Scenario

MIN_CLASS_SAMPLES = 20
MIN_EPISODE_SAMPLES = 20
QUANTILES = 101
MAX_CLASSES = 8
PSI_FEATURES: tuple[str, ...] = ("cg_psi_cpu_some_avg10", "host_psi_cpu_some_avg10")


@dataclass(frozen=True, slots=True)
class Calibration:
    class_values: tuple[float, ...]
    classes: tuple[tuple[float, float], ...]  # (factor vs the lightest class, share)
    service_mean_s: float
    quantiles: tuple[tuple[float, ...], ...]
    slowdown: float | None
    interference_on_s: float | None
    interference_off_s: float | None
    observed_heterogeneity: float | None
    samples: int
    unloaded: int
    notes: tuple[str, ...] = field(default=())

    def apply(self, scenario: Scenario) -> Scenario:
        changes: dict[str, Any] = {
            "classes": self.classes,
            "service_mean_s": self.service_mean_s,
            "service_dist": "empirical",
            "service_quantiles": self.quantiles,
        }
        if self.slowdown is not None:
            changes["slowdown"] = self.slowdown
        if self.interference_on_s is not None and self.interference_off_s is not None:
            changes["interference_on_s"] = self.interference_on_s
            changes["interference_off_s"] = self.interference_off_s
        return scenario.with_(**changes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "class_values": list(self.class_values),
            "classes": [list(c) for c in self.classes],
            "service_mean_s": self.service_mean_s,
            "slowdown": self.slowdown,
            "interference_on_s": self.interference_on_s,
            "interference_off_s": self.interference_off_s,
            "observed_heterogeneity": self.observed_heterogeneity,
            "samples": self.samples,
            "unloaded": self.unloaded,
            "notes": list(self.notes),
        }


class CalibrationError(ValueError):
    """The file is readable but cannot calibrate anything (too few usable samples)."""


@dataclass(slots=True)
class _Rows:
    """One row per usable sample: what the calibration needs, as arrays."""

    backend: np.ndarray
    cls: np.ndarray
    rtt: np.ndarray
    unloaded: np.ndarray
    episode: np.ndarray | None  # None when no PSI feature was recorded
    timeline: list[tuple[str, float, bool]]  # (backend, ts, in episode) for every candidate


def calibrate(path: str | Path, psi_threshold: float = 10.0) -> Calibration:
    rows = _read_rows(path, psi_threshold)
    notes: list[str] = []
    values, shares = _class_shares(rows.cls)
    speed, spread = _backend_speeds(rows)
    normalised = rows.rtt / speed
    calm = rows.unloaded if rows.episode is None else rows.unloaded & ~rows.episode
    means, tables = [], []
    for value in values:
        sel = calm & (rows.cls == value)
        if sel.sum() < MIN_CLASS_SAMPLES:
            notes.append(f"class {value:g}: {int(sel.sum())} calm unloaded samples, using all of the class")
            sel = rows.cls == value
        means.append(float(normalised[sel].mean()))
        tables.append(_unit_quantiles(normalised[sel]))
    lightest = min(means)
    slowdown = _slowdown(rows, normalised, notes)
    on_s, off_s = _episode_lengths(rows.timeline, notes) if rows.episode is not None else (None, None)
    return Calibration(
        class_values=tuple(values),
        classes=tuple((m / lightest, s) for m, s in zip(means, shares, strict=True)),
        service_mean_s=lightest,
        quantiles=tuple(tables),
        slowdown=slowdown,
        interference_on_s=on_s,
        interference_off_s=off_s,
        observed_heterogeneity=spread,
        samples=int(rows.rtt.shape[0]),
        unloaded=int(rows.unloaded.sum()),
        notes=tuple(notes),
    )


def _read_rows(path: str | Path, psi_threshold: float) -> _Rows:
    backend, cls, rtt, unloaded, episode = [], [], [], [], []
    timeline: list[tuple[str, float, bool]] = []
    has_psi = True
    for s in read_samples(path):
        chosen = s.chosen_candidate()
        if chosen is None or not 200 <= s.status < 300 or not s.rtt_s > 0.0:
            continue
        psi = _indices(s, PSI_FEATURES)
        has_psi = has_psi and psi is not None
        backend.append(s.chosen)
        cls.append(s.req_class)
        rtt.append(s.rtt_s)
        unloaded.append(_unloaded(s, chosen.x, chosen.local))
        if psi is not None:
            episode.append(chosen.x is not None and chosen.x[psi] >= psi_threshold)
            timeline.extend((c.backend, s.ts, c.x[psi] >= psi_threshold) for c in s.candidates if c.x)
    if len(rtt) < MIN_CLASS_SAMPLES:
        raise CalibrationError(f"{path}: {len(rtt)} usable samples (2xx, RTT > 0), need {MIN_CLASS_SAMPLES}")
    return _Rows(
        backend=np.asarray(backend),
        cls=np.asarray(cls),
        rtt=np.asarray(rtt),
        unloaded=np.asarray(unloaded, dtype=bool),
        episode=np.asarray(episode, dtype=bool) if has_psi else None,
        timeline=timeline if has_psi else [],
    )


def _indices(s: Sample, names: tuple[str, ...]) -> int | None:
    for name in names:
        if name in s.feature_names:
            return s.feature_names.index(name)
    return None


def _unloaded(s: Sample, x: tuple[float, ...] | None, local: tuple[float, ...]) -> bool:
    in_flight = local[s.local_names.index("proxy_in_flight")] if "proxy_in_flight" in s.local_names else 0.0
    if in_flight > 0:
        return False
    if x is not None and "app_queue_length" in s.feature_names:
        return x[s.feature_names.index("app_queue_length")] <= 0
    return True


def _class_shares(cls: np.ndarray) -> tuple[list[float], list[float]]:
    """The most frequent classes (at most ``MAX_CLASSES``; rarer ones are dropped) and shares."""
    values, counts = np.unique(cls, return_counts=True)
    keep = np.argsort(-counts, kind="stable")[:MAX_CLASSES]
    keep = keep[np.argsort(values[keep])]
    total = counts[keep].sum()
    return values[keep].tolist(), (counts[keep] / total).tolist()


def _backend_speeds(rows: _Rows) -> tuple[np.ndarray, float | None]:
    """Per-row divisor: the backend's median ``rtt / class median`` over its unloaded requests."""
    base = rows.unloaded if rows.unloaded.sum() >= MIN_CLASS_SAMPLES else np.ones_like(rows.unloaded)
    ratio = rows.rtt / _class_medians(rows.rtt, rows.cls, base)
    speed: dict[str, float] = {}
    for b in np.unique(rows.backend).tolist():
        sel = base & (rows.backend == b)
        speed[b] = float(np.median(ratio[sel])) if sel.any() else 1.0
    spread = max(speed.values()) / min(speed.values()) if len(speed) > 1 else None
    return np.array([speed[b] for b in rows.backend.tolist()]), spread


def _class_medians(values: np.ndarray, cls: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row, the median of ``values`` over the masked rows of its class (all of them if none)."""
    out = np.empty_like(values)
    for c in np.unique(cls):
        same = cls == c
        pick = same & mask if (same & mask).any() else same
        out[same] = np.median(values[pick])
    return out


def _unit_quantiles(values: np.ndarray) -> tuple[float, ...]:
    """Quantile table of ``values / mean``, rescaled so that inverse-CDF sampling by linear
    interpolation (the trapezoid rule over the table) has mean exactly 1."""
    q = np.quantile(values / values.mean(), np.linspace(0.0, 1.0, QUANTILES))
    interpolated_mean = float(np.mean((q[1:] + q[:-1]) / 2.0))
    return tuple((q / interpolated_mean).tolist())


def _slowdown(rows: _Rows, normalised: np.ndarray, notes: list[str]) -> float | None:
    if rows.episode is None:
        notes.append("no PSI feature recorded: interference not calibrated")
        return None
    ratio = normalised / _class_medians(normalised, rows.cls, rows.unloaded)
    on, off = rows.unloaded & rows.episode, rows.unloaded & ~rows.episode
    if on.sum() < MIN_EPISODE_SAMPLES or off.sum() < MIN_EPISODE_SAMPLES:
        notes.append(f"{int(on.sum())} unloaded samples in episodes: slowdown not calibrated")
        return None
    return max(1.0, float(np.median(ratio[on]) / np.median(ratio[off])))


def _episode_lengths(
    timeline: list[tuple[str, float, bool]], notes: list[str]
) -> tuple[float | None, float | None]:
    runs: dict[bool, list[float]] = {True: [], False: []}
    by_backend: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for b, ts, on in timeline:
        by_backend[b].append((ts, on))
    for points in by_backend.values():
        points = sorted(set(points))
        changes = [i for i in range(1, len(points)) if points[i][1] != points[i - 1][1]]
        # A run between two changes is complete; the first and last are censored.
        for first, nxt in itertools.pairwise(changes):
            runs[points[first][1]].append(points[nxt][0] - points[first][0])
    if not runs[True] or not runs[False]:
        notes.append("no complete interference episode observed: episode lengths not calibrated")
        return None, None
    return float(np.mean(runs[True])), float(np.mean(runs[False]))
