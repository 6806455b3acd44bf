"""The bench's PNG figures (matplotlib, Agg backend: no display needed).

* ``latency_cdf.png``: the RTT distribution of every measured policy on one log-x axis, with the
  tail (p90 and up) in a second panel on a log "nines" scale, where the policies differ;
* ``timeline.png``: the offered rate (arrivals per second) with the interference episodes as
  shaded spans per backend, then, per policy, each backend's share of the requests per window —
  whether a balancer moves traffic away from a backend while its neighbour is noisy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.loadgen import LoadResult

from .workload import Workload

SHARE_WINDOW_S = 2.0  # finer than the 10-s SLO windows: episodes last ~10 s


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_cdf(runs: Mapping[str, LoadResult], labels: Mapping[str, str], path: Path) -> Path:
    plt = _pyplot()
    fig, (ax, tail) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, result in runs.items():
        rtt = np.sort(result.rtt_s[result.ok]) * 1000.0
        if rtt.size == 0:
            continue
        q = np.arange(1, rtt.size + 1) / rtt.size
        ax.plot(rtt, q, label=labels.get(name, name))
        keep = q < 1.0  # the last point has no finite "nines"
        tail.plot(rtt[keep], -np.log10(1.0 - q[keep]), label=labels.get(name, name))
    ax.set_xscale("log")
    ax.set_xlabel("RTT (ms)")
    ax.set_ylabel("share of requests")
    ax.set_title("RTT CDF")
    ax.grid(True, which="both", alpha=0.3)
    tail.set_xscale("log")
    tail.set_ylim(1.0, None)
    tail.set_yticks([1, 2, 3], ["p90", "p99", "p99.9"])
    tail.set_xlabel("RTT (ms)")
    tail.set_title("tail")
    tail.grid(True, which="both", alpha=0.3)
    tail.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def timeline(
    workload: Workload,
    episodes: Sequence[Any],
    backends: Sequence[str],
    runs: Mapping[str, LoadResult],
    labels: Mapping[str, str],
    path: Path,
) -> Path:
    """``episodes``: the scenario's (backend, start_s, duration_s, kind, workers), from the load start."""
    plt = _pyplot()
    rows = 1 + len(runs)
    fig, axes = plt.subplots(rows, 1, figsize=(12, 2.0 + 1.6 * rows), sharex=True, squeeze=False)
    colours = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(backends)}
    top = axes[0][0]
    starts, rate = workload.offered_rate()
    top.step(starts, rate, where="post", color="black", label="offered req/s")
    top.set_ylabel("req/s")
    for e in episodes:
        top.axvspan(e.start_s, e.start_s + e.duration_s, color=colours.get(e.backend, "grey"), alpha=0.25)
        top.text(e.start_s, top.get_ylim()[1] * 0.9, f"{e.backend}:{e.kind}x{e.workers}", fontsize=7)
    top.set_title("offered load; shaded: noisy-neighbour episodes (backend:kind x stress workers)")
    for ax, (name, result) in zip((row[0] for row in axes[1:]), runs.items(), strict=True):
        edges, shares = backend_shares(result, backends, workload.duration_s, SHARE_WINDOW_S)
        # repeat the last window at the end of the run so that "post" steps draw it to the end
        edges = np.append(edges, workload.duration_s)
        shares = np.concatenate([shares, shares[:, -1:]], axis=1)
        ax.stackplot(edges, shares, colors=[colours[b] for b in backends], labels=list(backends), step="post")
        for e in episodes:
            ax.axvspan(e.start_s, e.start_s + e.duration_s, fill=False, hatch="//", alpha=0.3, lw=0)
        ax.set_ylim(0, 1)
        ax.set_ylabel("share")
        ax.set_title(labels.get(name, name), fontsize=9, loc="left")
    if runs:
        axes[1][0].legend(loc="upper right", fontsize=7, ncol=len(backends))
    axes[-1][0].set_xlabel("seconds since the load started")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def backend_shares(
    result: LoadResult, backends: Sequence[str], duration_s: float, window_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Window starts and, per backend (rows), its share of the answered requests sent in each window."""
    edges = np.arange(0.0, duration_s, window_s)
    which = np.minimum((result.scheduled_s // window_s).astype(np.int64), max(edges.size - 1, 0))
    shares = np.zeros((len(backends), edges.size))
    for i, b in enumerate(backends):
        shares[i] = np.bincount(which[result.backend == b], minlength=edges.size)[: edges.size]
    totals = shares.sum(axis=0)
    return edges, np.divide(shares, totals, out=np.zeros_like(shares), where=totals > 0)
