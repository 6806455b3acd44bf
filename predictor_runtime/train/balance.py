"""Balance the training set by RTT bins, as Morpheus does (arXiv 2510.20506).

Recorded traffic is dominated by the common case (an idle backend, a light request); a model fit on
it learns the common case well and the rare slow regimes — the ones routing must avoid — badly.
Morpheus bins the target and caps each bin. Bins here are Freedman-Diaconis wide,
``h = 2 * IQR * n^(-1/3)``, on log RTT, so a bin is a *relative* band of RTT (the accuracy measure,
1 - MAPE, is relative too). Each bin keeps at most ``cap`` rows, drawn uniformly at random (seeded);
the default cap is ``cap_factor`` x the median population of the non-empty bins, never below
``min_cap``. Kept rows stay in time order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_BINS = 256


@dataclass(frozen=True, slots=True)
class Balance:
    keep: np.ndarray  # indices into the input, ascending
    edges: np.ndarray  # bin edges on log RTT
    counts_before: np.ndarray
    counts_after: np.ndarray
    cap: int


def fd_edges(v: np.ndarray, max_bins: int = MAX_BINS) -> np.ndarray:
    """Freedman-Diaconis bin edges over ``v`` (at most ``max_bins`` bins, at least one)."""
    lo, hi = float(v.min()), float(v.max())
    q75, q25 = np.percentile(v, [75, 25])
    width = 2.0 * float(q75 - q25) * len(v) ** (-1.0 / 3.0)
    if width <= 0 or hi <= lo:
        return np.array([lo, hi if hi > lo else lo + 1.0])
    bins = min(max_bins, max(1, math.ceil((hi - lo) / width)))
    return np.linspace(lo, hi, bins + 1)


def balance(
    rtt_s: np.ndarray,
    rng: np.random.Generator,
    *,
    cap: int | None = None,
    cap_factor: float = 2.0,
    min_cap: int = 20,
) -> Balance:
    v = np.log(np.maximum(rtt_s, 1e-9))
    edges = fd_edges(v)
    which = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(which, minlength=len(edges) - 1)
    if cap is None:
        nonempty = counts[counts > 0]
        cap = max(min_cap, math.ceil(cap_factor * float(np.median(nonempty))))
    keep: list[np.ndarray] = []
    for b in np.flatnonzero(counts):
        members = np.flatnonzero(which == b)
        if len(members) > cap:
            members = rng.choice(members, size=cap, replace=False)
        keep.append(members)
    kept = np.sort(np.concatenate(keep))
    after = np.bincount(which[kept], minlength=len(counts))
    return Balance(keep=kept, edges=edges, counts_before=counts, counts_after=after, cap=cap)
