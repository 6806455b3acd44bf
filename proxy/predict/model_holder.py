"""The model currently in service, and the background task that hot-reloads it.

The request path reads ``holder.current`` once per decision (one attribute load). A watcher task
polls the bundle directory's ``model.json`` (size, mtime) and, optionally, a Redis key naming a
bundle path; on change it loads and validates the new bundle off the event loop (onnxruntime
session creation takes tens of milliseconds), warms it up, and swaps the reference. A bundle that
fails to load is refused, counted and logged, and the old model keeps serving: a bad push must
never take routing down with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from predictor_runtime.bundle import BundleError, load_bundle
from predictor_runtime.ood import RangeGuard
from predictor_runtime.scorer import Scorer

from ..tasks import cancel_and_wait

log = logging.getLogger("presage.model")


@dataclass(frozen=True, slots=True)
class LoadedModel:
    path: str
    version: str  # sha256 of model.onnx: identifies the model in logs and metrics
    scorer: Scorer
    guard: RangeGuard
    feature_names: tuple[str, ...]
    accuracy: float | None  # held-out accuracy from training, for /v1/model


def load_model(path: str | Path, *, max_batch: int, ood_tolerance: float) -> LoadedModel:
    bundle = load_bundle(path)
    scorer = Scorer.load(bundle, max_batch=max_batch)
    return LoadedModel(
        path=str(path),
        version=bundle.sha256,
        scorer=scorer,
        guard=RangeGuard(bundle.ranges, ood_tolerance),
        feature_names=tuple(bundle.feature_names),
        accuracy=bundle.metrics.get("accuracy") if isinstance(bundle.metrics, dict) else None,
    )


class ModelHolder:
    """Holds the model in service; ``on_swap`` callbacks run on the event loop after a swap."""

    def __init__(self) -> None:
        self.current: LoadedModel | None = None
        self.loads_ok = 0
        self.loads_failed = 0
        self.last_error: str | None = None
        self._on_swap: list[Callable[[LoadedModel | None], None]] = []

    def on_swap(self, callback: Callable[[LoadedModel | None], None]) -> None:
        self._on_swap.append(callback)

    def swap(self, model: LoadedModel | None) -> None:
        self.current = model
        for callback in self._on_swap:
            callback(model)

    def describe(self) -> dict[str, Any]:
        cur = self.current
        return {
            "loaded": cur is not None,
            "path": cur.path if cur else None,
            "version": cur.version if cur else None,
            "features": len(cur.feature_names) if cur else 0,
            "training_accuracy": cur.accuracy if cur else None,
            "loads_ok": self.loads_ok,
            "loads_failed": self.loads_failed,
            "last_error": self.last_error,
        }


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path / "model.json")
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


class ModelWatcher:
    """Polls a bundle path (and optionally a Redis key holding a path) and reloads on change."""

    def __init__(
        self,
        holder: ModelHolder,
        path: str | None,
        *,
        max_batch: int,
        ood_tolerance: float,
        interval_s: float = 1.0,
        redis: Any = None,
        redis_key: str | None = None,
        on_result: Callable[[bool], None] | None = None,
    ) -> None:
        self.holder = holder
        self.path = Path(path) if path else None
        self.max_batch = max_batch
        self.ood_tolerance = ood_tolerance
        self.interval_s = interval_s
        self.redis = redis
        self.redis_key = redis_key
        self.on_result = on_result
        self._stamp: tuple[str, tuple[int, int] | None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def load_now(self) -> bool:
        """Check once; returns True when a new model was swapped in."""
        path = await self._target()
        if path is None:
            return False
        stamp = (str(path), _stamp(path))
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            model = await asyncio.to_thread(
                load_model, path, max_batch=self.max_batch, ood_tolerance=self.ood_tolerance
            )
        except (BundleError, OSError, ValueError, RuntimeError) as exc:
            self.holder.loads_failed += 1
            self.holder.last_error = f"{path}: {exc}"
            log.error("model bundle refused, keeping the current one: %s: %s", path, exc)
            if self.on_result:
                self.on_result(False)
            return False
        cur = self.holder.current
        if cur is not None and cur.version == model.version:
            return False
        self.holder.loads_ok += 1
        self.holder.last_error = None
        self.holder.swap(model)
        log.info("model %s loaded from %s (%d inputs)", model.version[:12], path, len(model.feature_names))
        if self.on_result:
            self.on_result(True)
        return True

    async def _target(self) -> Path | None:
        if self.redis is not None and self.redis_key:
            try:
                raw = await self.redis.get(self.redis_key)
            except Exception as exc:  # Redis down: keep the file path, retry next tick
                log.debug("model key %s unreadable: %s", self.redis_key, exc)
                raw = None
            if raw:
                return Path(raw.decode() if isinstance(raw, bytes) else str(raw))
        return self.path

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.load_now()

    async def start(self) -> None:
        await self.load_now()
        self._task = asyncio.create_task(self._run(), name="presage-model-watcher")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
