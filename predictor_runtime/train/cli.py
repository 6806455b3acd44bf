"""``presage train``: build, assess and export a model bundle from recorded samples.

    presage train --data SAMPLES.jsonl [MORE ...] --out DIR [--report DIR] [--budget-frac 0.01]
                  [--seed N] [--families ridge,rf,lgbm,mlp,table] [--no-table-floor] [--follow ...]
    presage train --data LATER.jsonl --assess BUNDLE

``--data`` takes sample files (globs and comma lists too) or a Redis URL (``redis://host:port/db``,
stream key from ``--stream`` or a ``#KEY`` suffix). ``--assess BUNDLE`` trains nothing: it scores
every sample of ``--data`` (a later recording) with an existing bundle and prints accuracy, the
noise check and the decision time as a share of that recording's median RTT (``holdout``). Every
flag also reads ``PRESAGE_<FLAG>`` from the environment (CLI > environment > default). Exit codes:
0 done, 1 the model could not be built or exported, 2 bad input (the message names it; nothing is
written).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import zoo
from .dataset import DEFAULT_STREAM, TrainInputError
from .select import DEFAULT_K_GRID

if TYPE_CHECKING:
    from .pipeline import TrainOptions

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _str_list(text: str) -> tuple[str, ...]:
    return tuple(f.strip() for f in text.split(",") if f.strip())


_families = _str_list


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="presage train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", metavar="SRC", help="samples JSONL file(s), glob, or redis URL")
    p.add_argument("--out", metavar="DIR", help="bundle directory (replaced atomically)")
    p.add_argument(
        "--assess", metavar="BUNDLE", help="score --data with this bundle instead of training (held-out run)"
    )
    p.add_argument("--report", metavar="DIR", help="report directory (default: DIR/report inside the bundle)")
    p.add_argument(
        "--budget-frac", type=float, default=0.01, help="decision time budget / median RTT (<= 0.1)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--families", type=_families, default=zoo.LEARNED,
        help="comma list of " + ",".join(zoo.FAMILIES) + " (default: " + ",".join(zoo.LEARNED) + ")"
    )
    p.add_argument("--stream", default=DEFAULT_STREAM, help="Redis stream key for a redis:// source")
    p.add_argument("--min-samples", type=int, default=200)
    p.add_argument("--max-samples", type=int, default=200_000, help="train on the newest N samples at most")
    p.add_argument("--k-grid", type=_int_list, default=DEFAULT_K_GRID, help="feature counts to try")
    p.add_argument("--no-balance", action="store_true", help="do not balance the training rows by RTT bins")
    p.add_argument(
        "--weight-inverse-rtt", action="store_true",
        help="weight training rows by 1/RTT (aims at each cell's MAPE-optimal level; default: equal)",
    )  # fmt: skip
    p.add_argument(
        "--table-floor", action="store_true",
        help="add the per-cell table (backend, request class, in-flight) to --families: a learned "
        "model then ships only when it beats it on validation, or ranks backends better (the default)",
    )  # fmt: skip
    p.add_argument("--no-table-floor", action="store_true", help="leave the table out")
    p.add_argument(
        "--scored-decision-us", type=float, default=300.0,
        help="what a routing decision that calls the model costs inside a busy proxy (us): inputs that "
        "rule out prediction tables (peak-EWMA, feature age) are kept only when it fits the budget",
    )  # fmt: skip
    p.add_argument("--transform", default="log", help="target transform: log, log1p or identity")
    p.add_argument("--size", choices=("default", "small"), default="default", help="model sizes")
    p.add_argument("--timing-calls", type=int, default=2000, help="calls per inference-time measurement")
    p.add_argument("--parity-tolerance", type=float, default=1e-3)
    p.add_argument("--no-per-backend", action="store_true", help="skip the per-backend model comparison")
    p.add_argument(
        "--no-calibrate", action="store_true",
        help="ship the fit's own level (the median), not the MAPE-optimal scale fitted on validation",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--exclude", type=_str_list, default=(), metavar="PATTERNS",
        help="comma list of input name patterns never to use (fnmatch), e.g. 'host_*'",
    )  # fmt: skip
    f = p.add_argument_group("online retraining (--follow)")
    f.add_argument("--follow", action="store_true", help="retrain on a sliding window; publish improvements")
    f.add_argument("--interval", type=float, default=600.0, help="seconds between scheduled rounds")
    f.add_argument("--poll", type=float, default=15.0, help="seconds between drift checks")
    f.add_argument("--window", type=int, default=20_000, help="newest samples a round trains on")
    f.add_argument("--drift", type=float, default=0.05, help="retrain early when accuracy drops this much")
    f.add_argument("--min-gain", type=float, default=0.0, help="accuracy a candidate must add to publish")
    f.add_argument("--max-rounds", type=int, default=None)
    f.add_argument("--redis", metavar="URL", help="Redis for live accuracy and the model version key")
    return p


def _apply_env(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """``PRESAGE_<FLAG>`` becomes the default of ``--flag`` when the flag is not on the command line."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    for action in parser._actions:
        flag = next((o for o in action.option_strings if o.startswith("--")), None)
        if flag is None or flag in given or flag == "--help":
            continue
        raw = os.environ.get("PRESAGE_" + flag[2:].upper().replace("-", "_"))
        if raw is None:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            value: object = raw.strip().lower() in ("1", "true", "yes", "on")
        elif action.nargs == "+":
            value = raw.split()
        else:
            try:
                value = action.type(raw) if callable(action.type) else raw
            except (ValueError, argparse.ArgumentTypeError):
                parser.error(f"PRESAGE_{flag[2:].upper().replace('-', '_')}: invalid value {raw!r}")
        parser.set_defaults(**{action.dest: value})


def _options(args: argparse.Namespace) -> TrainOptions:
    from .pipeline import TrainOptions

    if args.min_samples < 1 or (args.max_samples is not None and args.max_samples < args.min_samples):
        raise TrainInputError("--max-samples must be at least --min-samples, and both positive")
    if args.timing_calls < 1:
        raise TrainInputError("--timing-calls must be at least 1")
    return TrainOptions(
        families=tuple(args.families),
        budget_frac=args.budget_frac,
        seed=args.seed,
        k_grid=tuple(args.k_grid),
        balance=not args.no_balance,
        min_samples=args.min_samples,
        max_samples=args.max_samples,
        transform=args.transform,
        zoo=zoo.ZooConfig.small() if args.size == "small" else zoo.ZooConfig(),
        timing_calls=args.timing_calls,
        parity_tolerance=args.parity_tolerance,
        per_backend=not args.no_per_backend,
        progress=not args.no_progress,
        exclude=tuple(args.exclude),
        calibrate=not args.no_calibrate,
        inverse_rtt_weight=args.weight_inverse_rtt,
        table_floor=not args.no_table_floor,
        scored_decision_s=args.scored_decision_us * 1e-6,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        _apply_env(parser, argv)
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse reports usage errors itself, with exit code 2
        return int(exc.code or 0)
    if not args.data or not (args.out or args.assess):
        need = "--data and --out are required (with --assess BUNDLE, --data)"
        print(f"presage train: error: {need}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from predictor_runtime.bundle import BundleError

    from .export import ExportError

    try:
        if args.assess:
            return _assess(args)
        return _follow(args) if args.follow else _train_once(args)
    except TrainInputError as exc:
        print(f"presage train: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ExportError, BundleError) as exc:
        print(f"presage train: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _train_once(args: argparse.Namespace) -> int:
    from .pipeline import run

    opts = _options(args)
    result = run(args.data, args.out, opts=opts, report=args.report, stream=args.stream)
    sel = result.selected
    report = args.report or str(Path(args.out) / "report")
    print(
        f"model {sel.family}: accuracy {sel.test['accuracy']:.4f} (1 - MAPE, latest {len(result.split.test)} "
        f"samples), MAE {sel.test['mae_s'] * 1e3:.3f} ms, R2 {sel.test['r2']:.3f}; decision p50/p99 "
        f"{sel.inference['p50_s'] * 1e6:.1f}/{sel.inference['p99_s'] * 1e6:.1f} us at batch "
        f"{len(result.dataset.backends)} (budget {result.budget_s * 1e6:.1f} us"
        f"{'' if sel.fits_budget else ', EXCEEDED'}); {len(result.features)} inputs\n"
        f"bundle: {args.out}  report: {report}/report.md"
    )
    return EXIT_OK


def _assess(args: argparse.Namespace) -> int:
    from .holdout import assess_bundle, summary_line

    print(summary_line(assess_bundle(args.assess, args.data, stream=args.stream)))
    return EXIT_OK


def _follow(args: argparse.Namespace) -> int:
    from .follow import Follower, FollowOptions

    opts = _options(args)
    fopts = FollowOptions(
        interval_s=args.interval, poll_s=args.poll, window=args.window, drift=args.drift,
        min_gain=args.min_gain, max_rounds=args.max_rounds, stream=args.stream,
    )  # fmt: skip
    redis_client = None
    if args.redis:
        import redis

        redis_client = redis.Redis.from_url(args.redis, socket_timeout=5)
    follower = Follower(args.data, Path(args.out), opts, fopts, redis=redis_client)
    rounds = follower.run()
    published = sum(r.published for r in rounds)
    print(f"{len(rounds)} rounds, {published} published to {args.out}")
    return EXIT_OK
