"""Feature selection: the monitoring metrics most correlated with RTT, without redundancy.

Following Morpheus and "Accurate Performance Predictors for Edge Computing Applications"
(arXiv 2510.20506, 2510.20495): rank every candidate column by its correlation with RTT — the
larger of |Pearson| (linear) and |Spearman| (any monotone relation, robust to the heavy RTT tail) —
drop constant columns and near-duplicates (|Pearson| > ``dup_threshold`` with a better-ranked kept
column: process and cgroup CPU, say), and keep the top ``k``, with ``k`` chosen from a small grid by
the accuracy of a probe model on the validation split. Columns named in ``always`` (the request's
own features: without them a model cannot tell a heavy request from a light one) are kept whenever
they vary and do not count towards ``k``. Fewer inputs means a faster model and a narrower
out-of-distribution surface; the grid search stops ``k`` where accuracy stops improving.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import rankdata

DEFAULT_K_GRID: tuple[int, ...] = (4, 8, 12, 16, 24, 32)
RANK_ROWS = 50_000  # correlations on a seeded subsample beyond this many rows: ranks are stable


@dataclass(frozen=True, slots=True)
class FeatureRank:
    name: str
    pearson: float
    spearman: float
    score: float  # max(|pearson|, |spearman|)
    status: str  # "kept", "always", "constant", "duplicate of NAME", "below top k"


@dataclass(frozen=True, slots=True)
class Ranking:
    features: tuple[FeatureRank, ...]  # best first; dropped ones after, in rank order

    @property
    def eligible(self) -> list[str]:
        """Non-constant, non-duplicate columns, best first."""
        return [f.name for f in self.features if f.status == "kept" or f.status == "below top k"]

    def with_k(self, k: int) -> Ranking:
        keep = set(self.eligible[:k])
        out = []
        for f in self.features:
            if f.status in ("kept", "below top k"):
                f = replace(f, status="kept" if f.name in keep else "below top k")
            out.append(f)
        return Ranking(tuple(out))

    def dropping(self, names: Sequence[str], status: str) -> Ranking:
        """The same ranking with the kept ``names`` no longer kept, marked ``status``."""
        drop = set(names)
        out = []
        for f in self.features:
            out.append(replace(f, status=status) if f.name in drop and f.status == "kept" else f)
        return Ranking(tuple(out))

    @property
    def kept(self) -> list[str]:
        """Model inputs: the ``always`` columns, then the top k, best first."""
        return [f.name for f in self.features if f.status == "always"] + [
            f.name for f in self.features if f.status == "kept"
        ]


def _corr_with(z: np.ndarray, target: np.ndarray) -> np.ndarray:
    t = (target - target.mean()) / (target.std() or 1.0)
    return (z * t[:, None]).mean(axis=0)


def _standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    std = x.std(axis=0)
    mean = x.mean(axis=0)
    const = std <= 1e-12 * np.maximum(np.abs(mean), 1.0)
    z = (x - mean) / np.where(const, 1.0, std)
    z[:, const] = 0.0
    return z, const


def rank_features(
    x: np.ndarray,
    y: np.ndarray,
    names: Sequence[str],
    *,
    dup_threshold: float = 0.98,
    always: Sequence[str] = (),
    rng: np.random.Generator | None = None,
) -> Ranking:
    """Rank the columns of ``x`` by correlation with ``y``; constant and duplicate ones marked."""
    if len(y) > RANK_ROWS:
        idx = (rng or np.random.default_rng(0)).choice(len(y), size=RANK_ROWS, replace=False)
        x, y = x[idx], y[idx]
    x = np.asarray(x, dtype=np.float64)
    z, const = _standardize(x)
    pearson = _corr_with(z, y)
    zr, _ = _standardize(rankdata(x, axis=0))
    spearman = _corr_with(zr, rankdata(y))
    score = np.maximum(np.abs(pearson), np.abs(spearman))
    score[const] = -1.0
    order = np.argsort(-score, kind="stable")
    kept: list[int] = []
    ranks: list[FeatureRank] = []
    for j in order:
        if const[j]:
            status = "constant"
        elif names[j] in always:
            status = "always"
        else:
            status = _duplicate_of(z, j, kept, names, dup_threshold)
        if status == "kept":
            kept.append(int(j))
        score_j = max(float(score[j]), 0.0)
        ranks.append(FeatureRank(names[j], float(pearson[j]), float(spearman[j]), score_j, status))
    ranks.sort(key=lambda f: (f.status not in ("kept", "always"), -f.score))
    return Ranking(tuple(ranks))


def _duplicate_of(z: np.ndarray, j: int, kept: list[int], names: Sequence[str], threshold: float) -> str:
    if not kept:
        return "kept"
    corr = np.abs(z[:, kept].T @ z[:, j]) / len(z)
    i = int(np.argmax(corr))
    return f"duplicate of {names[kept[i]]}" if corr[i] > threshold else "kept"


def choose_k(
    ranking: Ranking,
    evaluate: Callable[[list[str]], float],
    grid: Sequence[int] = DEFAULT_K_GRID,
    *,
    tolerance: float = 0.002,
) -> tuple[int, dict[int, float]]:
    """Pick ``k`` from ``grid``: the smallest whose validation accuracy is within ``tolerance`` of
    the best (fewer inputs: faster and more robust). ``evaluate(names) -> accuracy``."""
    n = len(ranking.eligible)
    ks = sorted({min(k, n) for k in grid if k > 0}) or [n]
    scores = {k: evaluate(ranking.eligible[:k]) for k in ks}
    best = max(scores.values())
    chosen = min(k for k, acc in scores.items() if acc >= best - tolerance)
    return chosen, scores
