"""Benchmark ``Scorer.score``: wall time per call at 4, 16, 64 and 1,000 rows.

Trains the default model on synthetic samples (``loadtest.synth_samples``; or loads ``--model``),
then times, per batch size, ``Scorer.score`` on its preallocated input buffer (the fast path the
proxy uses), ``Scorer.score`` on a caller-owned array (the general path), and a bare
``InferenceSession.run`` for reference. Prints a table and writes JSON.

    python -m loadtest.bench_scorer [--model DIR] [--samples 20000] [--calls 5000]
                                    [--out out/bench_scorer.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from predictor_runtime.bundle import Bundle, load_bundle
from predictor_runtime.scorer import Scorer

BATCHES: tuple[int, ...] = (4, 16, 64, 1000)


def _time(fn: Callable[[], object], calls: int, warmup: int = 200) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = np.empty(calls, dtype=np.int64)
    for i in range(calls):
        t0 = time.perf_counter_ns()
        fn()
        samples[i] = time.perf_counter_ns() - t0
    p50, p99 = np.percentile(samples, [50, 99]) / 1e3
    return {"p50_us": float(p50), "p99_us": float(p99), "mean_us": float(samples.mean() / 1e3)}


def _train(samples: int, seed: int, workdir: Path) -> Path:
    from loadtest.synth_samples import generate
    from predictor_runtime.train.pipeline import TrainOptions, run

    data = generate(workdir / "samples.jsonl", n_samples=samples, n_backends=4, seed=seed)
    out = workdir / "model"
    run([str(data)], out, opts=TrainOptions(seed=seed))
    return out


def bench(bundle: Bundle, calls: int, rng: np.random.Generator) -> list[dict[str, float]]:
    scorer = Scorer.load(bundle, max_batch=max(BATCHES))
    lo = np.array([r.p1 for r in bundle.ranges.values()], dtype=np.float32)
    hi = np.array([r.p99 for r in bundle.ranges.values()], dtype=np.float32)
    session = scorer._session
    in_name, out_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    rows = []
    for n in BATCHES:
        buf = scorer.input_buffer(n)
        buf[:] = rng.uniform(lo, hi, size=(n, len(lo))).astype(np.float32)
        own = buf.copy()
        reps = max(200, calls // max(1, n // 16))  # fewer calls for big batches: bounded run time
        rows.append({
            "batch": n,
            "calls": reps,
            "fast": _time(lambda buf=buf: scorer.score(buf), reps),
            "general": _time(lambda own=own: scorer.score(own), reps),
            "ort_run": _time(lambda own=own: session.run([out_name], {in_name: own}), reps),
        })  # fmt: skip
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_scorer", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="bundle directory (default: train one on synthetic samples)")
    ap.add_argument("--samples", type=int, default=20_000, help="synthetic samples to train on")
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out/bench_scorer.json")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="presage-bench-") as tmp:
        path = Path(args.model) if args.model else _train(args.samples, args.seed, Path(tmp))
        bundle = load_bundle(path)
        rows = bench(bundle, args.calls, np.random.default_rng(args.seed))
    source = "synthetic data" if args.model is None else str(args.model)
    accuracy = bundle.metrics.get("accuracy", float("nan"))
    print(
        f"model: {bundle.family}, {len(bundle.feature_names)} inputs, test accuracy {accuracy:.4f} ({source})"
    )
    head = ("batch", "fast p50", "fast p99", "gen p50", "gen p99", "ort p50", "ort p99")
    print(" ".join(f"{h:>9}" for h in head) + "  (us)")
    for r in rows:
        f, g, o = r["fast"], r["general"], r["ort_run"]
        cells = [f["p50_us"], f["p99_us"], g["p50_us"], g["p99_us"], o["p50_us"], o["p99_us"]]
        print(f"{r['batch']:>9} " + " ".join(f"{v:>9.1f}" for v in cells))
    result = {
        "model": {
            "family": bundle.family,
            "inputs": len(bundle.feature_names),
            "sha256": bundle.sha256,
            "metrics": dict(bundle.metrics),
            "synthetic": args.model is None,
        },
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
