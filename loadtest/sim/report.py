"""Markdown tables for the terminal and the ``--out`` directory."""

from __future__ import annotations

from collections.abc import Sequence

from .metrics import Summary
from .scale import ScalePoint
from .scenario import Scenario
from .sensitivity import Point
from .sweep import SweepResult, Threshold


def _ms(v: float) -> str:
    return f"{v * 1e3:.2f}"


def _acc(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def scenario_line(s: Scenario) -> str:
    return (
        f"{s.backends} backends x {s.servers} workers, capacity spread {s.heterogeneity:g}x, "
        f"load {s.load:g}, {s.requests} requests, {s.proxies} proxies, "
        f"reports every {s.interval_s:g} s + {s.delay_s:g} s, "
        f"interference {s.interference_on_s:g} s on / {s.interference_off_s:g} s off at {s.slowdown:g}x, "
        f"service {s.service_dist} (cv {s.service_cv:g}), predicted: view {s.view}, "
        f"choices {s.choices or 'all'}, seed {s.seed}"
    )


def summary_table(summaries: Sequence[Summary]) -> str:
    rows = [
        [
            s.policy + (f"@{s.accuracy:.3f}" if s.accuracy is not None else ""),
            _ms(s.mean_s),
            _ms(s.p50_s),
            _ms(s.p95_s),
            _ms(s.p99_s),
            f"{s.wasted_capacity * 100:.1f}",
            f"{s.utilisation * 100:.1f}",
            _acc(s.expected_accuracy),
            _acc(s.live_accuracy),
        ]
        for s in summaries
    ]
    header = ["policy", "mean ms", "p50 ms", "p95 ms", "p99 ms", "wasted %", "util %", "acc vs E", "live acc"]
    return _table(header, rows)


def threshold_line(key: str, th: Threshold) -> str:
    name = th.metric.removesuffix("_s")
    versus = "heuristic" if ":" not in key else "fallback"
    best = f"best {versus} {th.best_heuristic} ({_ms(th.best_value)} ms)"
    if th.accuracy is None:
        return f"- {name}: predicted never beats the {best}, even at 100 % accuracy"
    if th.bound == "at_most":
        return f"- {name}: predicted beats the {best} at every accuracy down to 0"
    return (
        f"- {name}: predicted beats the {best} from accuracy **{th.accuracy:.3f}** "
        f"(+/- {th.resolution:.3f}); its live accuracy there (vs observed RTT) is "
        f"**{_acc(th.live_accuracy)}**, vs expected RTT {_acc(th.expected_accuracy)}"
    )


def sweep_markdown(sweep: SweepResult) -> str:
    parts = [
        "## Accuracy sweep",
        scenario_line(sweep.scenario),
        "",
        "### Baselines",
        summary_table(sweep.baselines),
        "",
        "### predicted, by nominal accuracy",
        summary_table(sweep.predicted),
        "",
        "### Break-even accuracy",
        *[threshold_line(k, t) for k, t in sweep.thresholds.items()],
    ]
    return "\n".join(parts)


def _break_even(threshold: float | None, bound: str) -> str:
    if threshold is None:
        return "never"
    return "<= 0" if bound == "at_most" else f"{threshold:.3f}"


def sensitivity_markdown(points: Sequence[Point]) -> str:
    rows = [
        [
            p.axis,
            f"{p.value:g}",
            _break_even(p.threshold, p.bound),
            _acc(p.live_accuracy),
            f"{p.best_heuristic} {_ms(p.best_mean_s)}",
            _break_even(p.fallback_threshold, p.fallback_bound),
            _acc(p.fallback_live_accuracy),
            _ms(p.fallback_mean_s),
            _ms(p.predicted_100_mean_s),
            _ms(p.oracle_mean_s),
        ]
        for p in points
    ]
    header = [
        "axis",
        "value",
        "break-even vs best",
        "live acc there",
        "best heuristic (mean ms)",
        "break-even vs peak_ewma",
        "live acc there",
        "peak_ewma ms",
        "pred@1 ms",
        "oracle ms",
    ]
    return "## How the break-even accuracy moves\n" + _table(header, rows)


def scale_markdown(points: Sequence[ScalePoint], cpu: int | None) -> str:
    """One row per point; ``growth`` is the CPU time over the same policy's CPU time on the smallest fleet."""
    first: dict[str, float] = {}
    for p in sorted(points, key=lambda p: p.backends):
        first.setdefault(p.policy, p.cpu_s)
    rows = [
        [
            str(p.backends),
            str(p.requests),
            p.policy,
            f"{p.prepare_s:.2f}",
            f"{p.simulate_s:.2f}",
            f"{p.summarize_s:.2f}",
            f"{p.total_s:.2f}",
            f"{p.cpu_s:.2f}",
            f"{p.cpu_s / first[p.policy]:.2f}x",
            f"{p.us_per_request:.2f}",
            f"{p.simulated_s:.1f}",
            f"{p.peak_rss_mb:.0f}",
        ]
        for p in points
    ]
    header = [
        "backends",
        "requests",
        "policy",
        "prepare s",
        "simulate s",
        "summarize s",
        "total s",
        "CPU s",
        "growth (CPU)",
        "us/req",
        "sim time s",
        "peak RSS MB",
    ]
    pinned = f"pinned to CPU {cpu}" if cpu is not None else "not pinned (no sched_setaffinity)"
    return f"## Scale (one core, {pinned})\n" + _table(header, rows)
