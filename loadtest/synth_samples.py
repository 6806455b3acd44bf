"""Synthetic training samples in the real recorder format, from a model of heterogeneous backends.

A seeded stand-in for ``presage proxy --record`` while no recorded run is at hand. The world:

* every backend has a worker pool ``w``, a speed factor and a CPU quota; requests are image jobs
  whose service time grows as ``size * log2(size) / speed`` (the testbed backend's numpy work);
* load is a diurnal-like sine plus bursts, shared between backends; utilisation ``rho`` drives the
  mean queue length through Sakasegawa's M/M/c approximation ``Lq ~ rho^sqrt(2(c+1)) / (1 - rho)``,
  around which the queue moves as an AR(1) process;
* CPU-pressure episodes (a noisy neighbour: a two-state Markov chain per backend) slow service down
  and show up in PSI, CPU utilisation and throttling;
* the agent reports every second; each base metric is a noisy, correlated function of that state,
  with window aggregates (mean, max, least-squares slope) computed exactly as the schema defines;
  some metrics are constant (GPU absent) or near-duplicates (process vs cgroup CPU), as on a real
  host, so the feature selection has something to drop;
* the proxy routes by power-of-two-choices on its EWMA, or uniformly at random for an ``explore``
  share, and sees each vector up to two seconds late.

The RTT of the chosen backend depends on its *current* state, the request size and this proxy's
in-flight count, with log-normal noise; a few requests fail (503, fast) or time out (status 0).

    python -m loadtest.synth_samples OUT.jsonl [--samples N] [--backends B] [--seed S]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from metrics_agent import schema
from predictor_runtime import samples

SIZES = np.array([64, 128, 256, 512, 1024], dtype=np.float64)
SIZE_P = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
SERVICE_S_PER_UNIT = 4e-6  # seconds per size*log2(size) at speed 1: 256 px -> ~8 ms
NET_S = 0.0003
TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class Backends:
    ids: tuple[str, ...]
    workers: np.ndarray  # [B]
    speed: np.ndarray  # [B]
    quota: np.ndarray  # [B] cores, 0 = unlimited
    share: np.ndarray  # [B] routing share of the offered load


@dataclass(frozen=True, slots=True)
class World:
    """Per-tick (1 s) true state, shape [T, B]."""

    rho: np.ndarray
    slowdown: np.ndarray
    interference: np.ndarray
    queue: np.ndarray
    metrics: np.ndarray  # [T, B, M] base metrics in schema.BASE_METRICS order


def _backends(rng: np.random.Generator, n: int) -> Backends:
    workers = rng.choice([2.0, 4.0, 8.0], size=n)
    speed = rng.uniform(0.5, 1.5, size=n)
    quota = np.where(rng.random(n) < 0.5, workers * rng.uniform(0.6, 1.0, size=n), 0.0)
    capacity = workers * speed
    share = capacity / capacity.sum()
    return Backends(tuple(f"b{i + 1}" for i in range(n)), workers, speed, quota, share)


def _episodes(rng: np.random.Generator, ticks: int, n: int) -> np.ndarray:
    """Noisy-neighbour CPU pressure: on/off Markov chain, intensity drawn per episode."""
    out = np.zeros((ticks, n))
    on = np.zeros(n, dtype=bool)
    level = np.zeros(n)
    for t in range(ticks):
        start = ~on & (rng.random(n) < 0.012)
        level = np.where(start, rng.uniform(0.3, 1.0, size=n), level)
        on = (on & (rng.random(n) > 0.04)) | start
        out[t] = np.where(on, level, 0.0)
    return out


def _simulate(rng: np.random.Generator, be: Backends, ticks: int) -> World:
    t = np.arange(ticks, dtype=np.float64)[:, None]
    mean_service = SERVICE_S_PER_UNIT * float((SIZES * np.log2(SIZES)) @ SIZE_P) / be.speed
    wave = 0.55 + 0.3 * np.sin(2 * math.pi * t / 420.0) + 0.1 * np.sin(2 * math.pi * t / 97.0)
    bursts = np.repeat(rng.random((ticks // 30 + 1, 1)) < 0.15, 30, axis=0)[:ticks] * 0.25
    drift = 0.08 * np.cumsum(rng.normal(0, 0.05, size=(ticks, len(be.ids))), axis=0).clip(-1, 1)
    rho_offered = (wave + bursts) * (1.0 + drift)
    interference = _episodes(rng, ticks, len(be.ids))
    slowdown = 1.0 + 1.3 * interference
    rho = np.clip(rho_offered * slowdown, 0.02, 0.96)
    c = be.workers[None, :]
    lq = rho ** np.sqrt(2 * (c + 1)) / (1 - rho)  # Sakasegawa's M/M/c approximation
    queue = _queue(rng, lq)
    rate = rho * c / (mean_service[None, :] * slowdown)
    metrics = _metrics(rng, be, rho, interference, queue, rate)
    return World(rho=rho, slowdown=slowdown, interference=interference, queue=queue, metrics=metrics)


def _queue(rng: np.random.Generator, lq: np.ndarray) -> np.ndarray:
    """Queue length per tick: AR(1) around the Sakasegawa mean (a queue drains over seconds, it
    does not redraw itself every tick), with gamma-distributed arrivals noise, rounded to requests."""
    out = np.empty_like(lq)
    level = lq[0]
    for t in range(len(lq)):
        level = 0.6 * level + 0.4 * lq[t] * rng.gamma(2.0, 0.5, size=lq.shape[1])
        out[t] = level
    return np.round(out)


def _metrics(
    rng: np.random.Generator,
    be: Backends,
    rho: np.ndarray,
    intf: np.ndarray,
    queue: np.ndarray,
    rate: np.ndarray,
) -> np.ndarray:
    """Base metrics [T, B, M] as noisy, correlated functions of the true state."""
    shape = rho.shape
    c = be.workers[None, :]

    def noise(scale: float) -> np.ndarray:
        return rng.normal(0.0, scale, size=shape)

    busy = np.minimum(rho * c, c)
    proc_cpu = np.clip(busy * 0.9 + noise(0.05), 0, None)
    cpu = np.clip(0.08 + 0.55 * rho + 0.3 * intf + noise(0.03), 0, 1)
    load1 = _ewma(cpu * 1.2 + queue / (2 * c), 0.1)
    psi_cpu = np.clip(100 * (0.5 * intf + 1.2 * np.maximum(rho - 0.75, 0)) + noise(1.5), 0, 100)
    in_flight = np.minimum(c, rng.poisson(busy + 0.1)).astype(np.float64)
    rss = 2.0e8 + 1.5e7 * queue + 4e6 * in_flight + noise(2e6)
    quota = np.broadcast_to(be.quota[None, :], shape)
    throttled = np.where(quota > 0, np.clip((proc_cpu - quota) * 10 + noise(0.3), 0, None), 0.0)
    cols = {
        "host_cpu_util": cpu,
        "host_load1_per_core": load1,
        "host_ctx_switches_per_s": 2000 + 9000 * rho + 3000 * intf + noise(300),
        "host_mem_used_frac": np.clip(0.42 + 0.08 * rho + noise(0.01), 0, 1),
        "host_net_bytes_per_s": rate * 60_000 * (1 + noise(0.1)),
        "host_disk_io_bytes_per_s": np.abs(rng.lognormal(11, 1, size=shape)),
        "host_psi_cpu_some_avg10": psi_cpu,
        "host_psi_mem_some_avg10": np.abs(noise(0.05)),
        "host_psi_io_some_avg10": np.abs(noise(0.3)),
        "proc_cpu_util": proc_cpu,
        "proc_rss_bytes": rss,
        "proc_threads": np.broadcast_to(c + 4, shape).astype(np.float64),
        "proc_open_files": 20 + in_flight + queue,
        "cg_cpu_util": proc_cpu * 1.01 + noise(0.005),
        "cg_cpu_quota_cores": quota.astype(np.float64),
        "cg_throttled_periods_per_s": throttled,
        "cg_throttled_seconds_per_s": throttled * 0.012,
        "cg_mem_used_bytes": rss + 5e7,
        "cg_mem_limit_frac": (rss + 5e7) / 2e9,
        "cg_psi_cpu_some_avg10": np.clip(psi_cpu * 0.9 + noise(1.0), 0, 100),
        "cg_psi_mem_some_avg10": np.abs(noise(0.05)),
        "cg_psi_io_some_avg10": np.abs(noise(0.2)),
        "gpu_util": np.zeros(shape),
        "gpu_mem_used_frac": np.zeros(shape),
        "app_in_flight": in_flight,
        "app_queue_length": queue,
        "app_workers": np.broadcast_to(c, shape).astype(np.float64),
    }
    return np.stack([cols[name] for name in schema.BASE_METRICS], axis=-1)


def _ewma(x: np.ndarray, alpha: float) -> np.ndarray:
    out = np.empty_like(x)
    acc = x[0]
    for i in range(len(x)):
        acc = alpha * x[i] + (1 - alpha) * acc
        out[i] = acc
    return out


def feature_matrix(base: np.ndarray, windows: Sequence[int]) -> np.ndarray:
    """[T, B, M] base metrics -> [T, B, F] in ``schema.feature_names(windows)`` order.

    Windows are trailing and include the current tick; the first ticks repeat the first value so
    every window is full (the agent's own warm-up behaves alike).
    """
    ticks = base.shape[0]
    pad = max(windows) - 1
    padded = np.concatenate([np.repeat(base[:1], pad, axis=0), base], axis=0)
    per_metric: list[np.ndarray] = [base]
    for w in windows:
        view = sliding_window_view(padded, w, axis=0)[pad - w + 1 : pad - w + 1 + ticks]  # [T,B,M,w]
        tc = np.arange(w, dtype=np.float64) - (w - 1) / 2.0
        slope = view @ tc / float(tc @ tc) if w > 1 else np.zeros_like(base)
        per_metric += [view.mean(axis=-1), view.max(axis=-1), slope]
    stacked = np.stack(per_metric, axis=-1)  # [T, B, M, 1 + 3W]: metric-major, as the schema
    return stacked.reshape(ticks, base.shape[1], -1)


def _round_sig(x: np.ndarray, digits: int = 5) -> np.ndarray:
    """Round to ``digits`` significant figures so the JSON stays compact (agents send floats)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(x == 0, 0, np.floor(np.log10(np.abs(x))))
    scale = 10.0 ** (digits - 1 - mag)
    return np.round(x * scale) / scale


def generate(
    path: str | Path,
    *,
    n_samples: int = 5000,
    n_backends: int = 4,
    seed: int = 0,
    start_ts: float = 1_700_000_000.0,
    rate_per_s: float = 8.0,
    explore: float = 0.1,
    windows: Sequence[int] = schema.DEFAULT_WINDOWS,
    restart_every: int = 0,
) -> Path:
    """Write ``n_samples`` samples to ``path`` (JSON lines, ``predictor_runtime.samples``)."""
    rng = np.random.default_rng(seed)
    be = _backends(rng, n_backends)
    warm = max(windows)
    ticks = warm + math.ceil(n_samples / rate_per_s) + 2
    world = _simulate(rng, be, ticks)
    feats = _round_sig(feature_matrix(world.metrics, tuple(windows)))
    names = schema.feature_names(tuple(windows))
    ts = np.sort(rng.uniform(warm, ticks - 1, size=n_samples))
    path = Path(path)
    with open(path, "wb") as fh:
        fh.write(samples.dumps(samples.header_record(names)))
        for i, t in enumerate(ts):
            if restart_every and i and i % restart_every == 0:
                fh.write(samples.dumps(samples.header_record(names)))
            fh.write(samples.dumps(_request(rng, be, world, feats, float(t), start_ts, i, explore)))
    return path


def _request(
    rng: np.random.Generator,
    be: Backends,
    world: World,
    feats: np.ndarray,
    t: float,
    start_ts: float,
    i: int,
    explore: float,
) -> dict[str, object]:
    now = int(t)
    seen = max(0, now - int(rng.random() < 0.3))  # the vector the proxy had: up to ~2 s old
    size = float(SIZES[rng.choice(len(SIZES), p=SIZE_P)])
    post = rng.random() < 0.2
    n = len(be.ids)
    mean_rtt = (
        SERVICE_S_PER_UNIT * 2600 / be.speed * world.slowdown[seen] * (1 + world.queue[seen] / be.workers)
    )
    local_inflight = rng.poisson(world.rho[now] * be.workers * 0.4).astype(np.float64)
    ewma = mean_rtt * rng.lognormal(0, 0.1, size=n)
    is_explore = bool(rng.random() < explore)
    if is_explore:
        chosen = int(rng.integers(n))
    else:  # power of two choices on EWMA x (in-flight + 1), as peak_ewma
        a, b = rng.choice(n, size=2, replace=False)
        chosen = int(a if ewma[a] * (local_inflight[a] + 1) <= ewma[b] * (local_inflight[b] + 1) else b)
    rtt, status = _rtt(rng, be, world, chosen, now, size, post, local_inflight[chosen])
    cands = []
    for b in range(n):
        x = None if rng.random() < 0.002 else feats[seen, b].tolist()
        local = [float(local_inflight[b]), float(round(ewma[b], 6)), round(t - seen, 4)]
        cands.append({"backend": be.ids[b], "x": x, "local": local})
    method = "POST" if post else "GET"
    return {
        "type": "sample",
        "ts": round(start_ts + t, 4),
        "id": f"req-{i}",
        "method": method,
        "req_bytes": int(size * size * 3) if post else 0,
        "req_class": float(size),
        "policy": "random" if is_explore else "peak_ewma",
        "explore": is_explore,
        "chosen": be.ids[chosen],
        "rtt_s": float(rtt),
        "status": status,
        "candidates": cands,
    }


def _rtt(
    rng: np.random.Generator,
    be: Backends,
    world: World,
    b: int,
    now: int,
    size: float,
    post: bool,
    inflight: float,
) -> tuple[float, int]:
    service = SERVICE_S_PER_UNIT * size * math.log2(size) / be.speed[b] * world.slowdown[now, b]
    if post:
        service *= 1.1
    mean_service = SERVICE_S_PER_UNIT * 2600 / be.speed[b] * world.slowdown[now, b]
    wait = (world.queue[now, b] + 0.5 * inflight) * mean_service / be.workers[b]
    rtt = (service + wait + NET_S) * float(rng.lognormal(0.0, 0.06))
    u = rng.random()
    if u < 0.004:
        return round(float(rng.uniform(0.0005, 0.002)), 6), 503  # shed early: fast, not an RTT
    if world.rho[now, b] > 0.93 and u < 0.02:
        return TIMEOUT_S, 0
    return round(rtt, 7), 200


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="synth_samples", description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--backends", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--explore", type=float, default=0.1)
    ap.add_argument("--start-ts", type=float, default=1_700_000_000.0)
    args = ap.parse_args(argv)
    generate(
        args.out,
        n_samples=args.samples,
        n_backends=args.backends,
        seed=args.seed,
        explore=args.explore,
        start_ts=args.start_ts,
    )
    print(f"wrote {args.samples} samples from {args.backends} backends to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
