"""``presage train --follow``: online retraining on a sliding window, publishing only improvements.

Metronome keeps its online random forest fresh by retraining as traffic changes; here a round is
a full pipeline run (``pipeline.train``) on the newest ``window`` samples. A round starts on a
schedule (every ``interval_s``) or earlier when the model in service drifts: its live accuracy —
the rolling 1 - MAPE the proxy writes to ``presage:live_accuracy`` — or, without Redis, its
accuracy on samples that arrived since the last round, falls more than ``drift`` below the
accuracy the bundle was published with.

A candidate replaces the bundle in ``--out`` only if it beats the current one on the same recent
held-out samples: the latest split of the window, which the candidate was never fit on (the current
model may have been, which can only flatter it, so a published candidate is really better).
Publishing is the atomic directory swap of ``bundle.write_bundle``; optionally the bundle's sha256
and path are set in Redis (``presage:model:version``, ``presage:model:path``) for proxies that
watch a key. A round that fails after the first (a bad batch of samples, an export failure) is
logged and the loop goes on with the current model in service.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from predictor_runtime.bundle import Bundle, BundleError, load_bundle
from predictor_runtime.scorer import Scorer

from . import assess
from .dataset import Dataset, TrainInputError, build_dataset, read_samples
from .export import ExportError
from .pipeline import TrainOptions, TrainResult, check_out_dir, train

LIVE_ACCURACY_KEY = "presage:live_accuracy"
# The candidate's accuracy comes from its native model, the current bundle's from onnxruntime; trees
# store float32 leaf values in ONNX, so one and the same model differs by ~1e-7 between the two.
SCORING_EPS = 1e-6
VERSION_KEY = "presage:model:version"
PATH_KEY = "presage:model:path"


@dataclass(frozen=True, slots=True)
class FollowOptions:
    interval_s: float = 600.0  # scheduled retrain period
    poll_s: float = 15.0  # drift check period between scheduled rounds
    window: int = 20_000  # newest samples a round trains on
    drift: float = 0.05  # retrain early when accuracy < published accuracy - drift
    min_gain: float = 0.0  # publish when new accuracy > current + min_gain
    min_new: int = 200  # samples since the last round needed to judge drift from samples
    max_rounds: int | None = None
    stream: str = "presage:samples"
    live_accuracy_key: str = LIVE_ACCURACY_KEY
    version_key: str = VERSION_KEY
    path_key: str = PATH_KEY

    def __post_init__(self) -> None:
        if self.interval_s < 0 or self.poll_s <= 0 or self.window < 1 or self.drift < 0:
            raise TrainInputError("--interval, --poll, --window and --drift must be positive")
        if self.max_rounds is not None and self.max_rounds < 1:
            raise TrainInputError("--max-rounds must be at least 1")


@dataclass(frozen=True, slots=True)
class RoundResult:
    trigger: str  # "start", "schedule", "drift"
    published: bool
    new_accuracy: float
    current_accuracy: float | None
    sha256: str | None = None


@dataclass
class Follower:
    data: Sequence[str]
    out: Path
    train_opts: TrainOptions
    opts: FollowOptions = field(default_factory=FollowOptions)
    redis: Any = None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    log: Callable[[str], None] = lambda msg: print(f"presage train --follow: {msg}", file=sys.stderr)
    report: Callable[[TrainResult, Path], None] | None = None
    rounds: list[RoundResult] = field(default_factory=list)
    _last_ts: float = float("-inf")

    def run(self) -> list[RoundResult]:
        check_out_dir(self.out)
        trigger = "start"
        while True:
            try:
                self.rounds.append(self.round(trigger))
            except (TrainInputError, ExportError, BundleError) as exc:
                if not self.rounds:
                    raise  # the first round validates the command line and the data
                self.log(f"round {len(self.rounds) + 1} ({trigger}) failed, model unchanged: {exc}")
                self.rounds.append(RoundResult(trigger, False, float("nan"), None))
            if self.opts.max_rounds is not None and len(self.rounds) >= self.opts.max_rounds:
                return self.rounds
            trigger = self.wait()

    def wait(self) -> str:
        """Sleep until the schedule is due or the model drifts; returns which."""
        due = self.clock() + self.opts.interval_s
        while True:
            now = self.clock()
            if now >= due:
                return "schedule"
            self.sleep(min(self.opts.poll_s, due - now))
            if self.clock() < due and self.drifted():
                return "drift"

    def round(self, trigger: str) -> RoundResult:
        ds = build_dataset(
            read_samples(self.data, stream=self.opts.stream, last=self.opts.window),
            min_samples=self.train_opts.min_samples,
        )
        self._last_ts = float(ds.ts[-1])
        result = train(ds, self.train_opts, sources=self.data)
        new_acc = result.selected.test["accuracy"]
        cur_acc = self._current_accuracy(ds, result)
        better = cur_acc is None or new_acc > cur_acc + self.opts.min_gain + SCORING_EPS
        sha = self._publish(result) if better else None
        verdict = "published" if better else "kept the current model"
        cur_txt = "none" if cur_acc is None else f"{cur_acc:.4f}"
        n = len(self.rounds) + 1
        self.log(f"round {n} ({trigger}): candidate {new_acc:.4f} vs current {cur_txt}: {verdict}")
        return RoundResult(trigger, better, new_acc, cur_acc, sha)

    def _current_accuracy(self, ds: Dataset, result: TrainResult) -> float | None:
        """The bundle in service, scored on the candidate's held-out rows (None: unusable)."""
        try:
            bundle = load_bundle(self.out)
        except BundleError as exc:
            if (self.out / "model.json").exists():
                self.log(f"current bundle unusable, replacing it: {exc}")
            return None
        test = ds.subset(result.split.test)
        try:
            return _accuracy_of(bundle, test)
        except (TrainInputError, BundleError) as exc:
            self.log(f"current bundle cannot score recent samples ({exc}); replacing it")
            return None

    def _publish(self, result: TrainResult) -> str:
        from predictor_runtime.bundle import write_bundle

        from .report import write_report

        report = self.report or write_report
        bundle = write_bundle(
            self.out, result.selected.onnx, result.meta(), extra=lambda t: report(result, t / "report")
        )
        if self.redis is not None:
            try:
                self.redis.set(self.opts.version_key, bundle.sha256)
                self.redis.set(self.opts.path_key, str(self.out.resolve()))
            except Exception as exc:  # the bundle is published on disk either way
                self.log(f"could not set {self.opts.version_key} in Redis: {exc}")
        return bundle.sha256

    def drifted(self) -> bool:
        try:
            bundle = load_bundle(self.out)
        except BundleError:
            return True  # nothing (usable) in service: retrain now
        baseline = bundle.metrics.get("accuracy")
        if baseline is None:
            return False
        live = self._live_accuracy()
        if live is None:
            live = self._recent_accuracy(bundle)
        return live is not None and live < baseline - self.opts.drift

    def _live_accuracy(self) -> float | None:
        if self.redis is None:
            return None
        try:
            raw = self.redis.get(self.opts.live_accuracy_key)
        except Exception:
            return None
        return parse_accuracy(raw)

    def _recent_accuracy(self, bundle: Bundle) -> float | None:
        try:
            fresh = [s for s in read_samples(self.data, stream=self.opts.stream, last=self.opts.window)
                     if s.ts > self._last_ts]  # fmt: skip
            if len(fresh) < self.opts.min_new:
                return None
            return _accuracy_of(bundle, build_dataset(fresh, min_samples=1))
        except (TrainInputError, BundleError):
            return None


def _accuracy_of(bundle: Bundle, ds: Dataset) -> float:
    x = ds.columns(bundle.feature_names)
    pred = Scorer.load(bundle, max_batch=1).score(np.ascontiguousarray(x)).astype(np.float64)
    return assess.accuracy_metrics(ds.y, pred)["accuracy"]


def parse_accuracy(raw: bytes | str | None) -> float | None:
    """The proxy's live accuracy: a number, or a JSON object with an ``accuracy`` field."""
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    try:
        value = float(text)
    except ValueError:
        import orjson

        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        field_value = obj.get("accuracy") if isinstance(obj, dict) else None
        if not isinstance(field_value, int | float):
            return None
        value = float(field_value)
    return value if np.isfinite(value) else None
