"""PNG figures of a comparison, a sweep, the threshold's sensitivity and the scale benchmark.

matplotlib with the Agg backend (no display); imported only when a figure is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .metrics import Summary
from .scale import ScalePoint
from .sensitivity import Point
from .sweep import SweepResult

OFF_SCALE = 3.0  # heuristics worse than this multiple of the best are left off the sweep plots
AXIS_LABELS: dict[str, str] = {
    "load": "offered load",
    "heterogeneity": "fastest / slowest capacity",
    "staleness": "report interval s (delay: half), stale view",
    "proxies": "proxies",
    "proxies_stale": "proxies, stale view",
    "choices": "candidates scored by predicted",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_compare(summaries: Sequence[Summary], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    names = [s.policy + (f"@{s.accuracy:.2f}" if s.accuracy is not None else "") for s in summaries]
    x = range(len(summaries))
    for offset, (field, label) in enumerate((("mean_s", "mean"), ("p95_s", "p95"), ("p99_s", "p99"))):
        ax.bar(
            [i + (offset - 1) * 0.27 for i in x],
            [getattr(s, field) * 1e3 for s in summaries],
            0.27,
            label=label,
        )
    ax.set_xticks(list(x), names, rotation=20, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("RTT (ms)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_sweep(sweep: SweepResult, out: Path) -> list[Path]:
    return [_sweep_rtt(sweep, out / "sweep_rtt.png"), _sweep_other(sweep, out / "sweep_waste_accuracy.png")]


def _sweep_rtt(sweep: SweepResult, path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    acc = [s.accuracy for s in sweep.predicted]
    for ax, (field, title) in zip(
        axes, (("mean_s", "mean"), ("p95_s", "p95"), ("p99_s", "p99")), strict=True
    ):
        ax.plot(
            acc, [getattr(s, field) * 1e3 for s in sweep.predicted], "o-", color="black", label="predicted"
        )
        _reference_lines(ax, sweep.baselines, field)
        th = sweep.thresholds.get(field)
        if th is not None and th.accuracy is not None:
            ax.axvline(th.accuracy, color="red", linestyle=":", label=f"break-even {th.accuracy:.3f}")
        ax.set_title(f"{title} RTT")
        ax.set_xlabel("predictor accuracy (1 - MAPE)")
        ax.set_ylabel("ms")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _reference_lines(ax: Any, baselines: Sequence[Summary], field: str) -> None:
    best = min(getattr(s, field) for s in baselines if s.policy != "oracle")
    for i, s in enumerate(baselines):
        value = getattr(s, field)
        if s.policy != "oracle" and value > OFF_SCALE * best:
            continue
        style = "--" if s.policy != "oracle" else "-."
        ax.axhline(value * 1e3, linestyle=style, color=f"C{i}", label=s.policy)


def _sweep_other(sweep: SweepResult, path: Path) -> Path:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    acc = [s.accuracy for s in sweep.predicted]
    left.plot(acc, [s.wasted_capacity for s in sweep.predicted], "o-", color="black", label="predicted")
    for i, s in enumerate(sweep.baselines):
        left.axhline(s.wasted_capacity, linestyle="--", color=f"C{i}", label=s.policy)
    left.set_title("wasted capacity (idle while others queue)")
    left.set_xlabel("predictor accuracy (1 - MAPE)")
    left.legend(fontsize=7)
    right.plot(acc, acc, ":", color="grey", label="nominal")
    right.plot(acc, [s.expected_accuracy for s in sweep.predicted], "o-", label="vs expected RTT (chosen)")
    right.plot(acc, [s.live_accuracy for s in sweep.predicted], "s-", label="live: vs observed RTT")
    right.set_title("accuracy the policy then shows")
    right.set_xlabel("nominal accuracy")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_sensitivity(points: Sequence[Point], path: Path) -> Path:
    """One panel per axis, its values as evenly spaced categories (they span 0.05..4, and
    ``choices`` 0 means "all"); a break-even that does not exist is marked "never" at the top."""
    plt = _pyplot()
    axes_names = list(dict.fromkeys(p.axis for p in points))
    fig, axes = plt.subplots(1, len(axes_names), figsize=(3.6 * len(axes_names), 3.6), squeeze=False)
    series = (
        ("threshold", "o-", "C0", "vs best"),
        ("live_accuracy", "s--", "C0", "vs best, live"),
        ("fallback_threshold", "o-", "C1", "vs peak_ewma"),
        ("fallback_live_accuracy", "s--", "C1", "vs peak_ewma, live"),
    )
    for ax, name in zip(axes[0], axes_names, strict=True):
        pts = [p for p in points if p.axis == name]
        xs = list(range(len(pts)))
        for attr, style, color, label in series:
            ys = [getattr(p, attr) for p in pts]
            ax.plot(xs, [y if y is not None else float("nan") for y in ys], style, color=color, label=label)
        for x, p in zip(xs, pts, strict=True):
            if p.threshold is None:
                ax.annotate("never", (x, 1.0), ha="center", fontsize=8, color="C0")
            if p.fallback_threshold is None:
                ax.annotate("never", (x, 0.93), ha="center", fontsize=8, color="C1")
        ax.set_xticks(xs, [("all" if name == "choices" and p.value == 0 else f"{p.value:g}") for p in pts])
        ax.set_xlim(-0.5, len(pts) - 0.5)
        ax.set_ylim(0.0, 1.05)
        ax.set_title(name)
        ax.set_xlabel(AXIS_LABELS.get(name, name), fontsize=8)
    axes[0][0].set_ylabel("break-even accuracy")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_scale(points: Sequence[ScalePoint], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for policy in dict.fromkeys(p.policy for p in points):
        pts = [p for p in points if p.policy == policy]
        ax.plot([p.backends for p in pts], [p.total_s for p in pts], "o-", label=policy)
    ax.set_xscale("log")
    ax.set_xlabel("backends")
    ax.set_ylabel("wall time (s), one core")
    ax.axhline(300, color="red", linestyle=":", label="5 min")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
