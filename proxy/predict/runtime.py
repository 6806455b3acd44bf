"""Per-worker prediction runtime: feature store, model, recorder, and the policy chain over them.

A worker that routes by ``predicted``, shadows it, explores or records samples owns one
``PredictionRuntime``. It starts the background parts (all I/O lives here, never in a request):

* the ``FeatureStore`` (``proxy.features``): Redis -> immutable snapshot of every backend's vector;
* the ``ModelWatcher``: the bundle at ``--model`` or at the Redis key ``{prefix}model:path``
  (``presage train --follow`` publishes there), validated off the event loop and hot-swapped;
* the ``SampleRecorder`` (``--record FILE`` and/or ``--record-stream KEY``);
* a publisher of the live accuracy to ``{prefix}live_accuracy`` (read by ``train --follow`` to
  decide when to retrain; with several workers the latest writer wins, each holds ~500 recent
  observations of the same traffic).

``policy_for(config)`` builds the chain ``Explore(Shadow(live, shadow))`` and the ``DecisionTap``
the data plane reports to. A reload that keeps the ``predicted`` settings keeps the same policy
object, so live accuracy and the decision-time breaker survive a SIGHUP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from ..balancer.base import Policy
from ..balancer.explore import ExplorePolicy
from ..balancer.peak_ewma import PeakEwmaPolicy
from ..balancer.predicted import FALLBACK_REASONS, PredictedPolicy, PredictedSettings
from ..balancer.registry import make_policy
from ..balancer.shadow import ShadowPolicy
from ..config import ProxyConfig
from ..metrics import Metrics
from ..recorder import SampleRecorder
from ..tasks import cancel_and_wait
from .model_holder import ModelHolder, ModelWatcher
from .tap import DecisionTap
from .wants import uses_features

log = logging.getLogger("presage.prediction")

PREFIX = "presage:"
MODEL_KEY = PREFIX + "model:path"
LIVE_ACCURACY_KEY = PREFIX + "live_accuracy"
PUBLISH_INTERVAL_S = 5.0
# A starting worker waits this long for the store's first read of Redis, so that its first
# requests are routed by the model rather than counted as stale fallbacks. Redis down: it starts
# anyway (the safeguards route by peak-EWMA until vectors arrive).
FIRST_FEATURES_WAIT_S = 2.0


class PredictionRuntime:
    def __init__(
        self,
        config: ProxyConfig,
        metrics: Metrics,
        *,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.wall_clock = wall_clock
        self.holder = ModelHolder()
        self.features: Any = None
        # the store's latest snapshot, kept here by its ``on_snapshot`` hook: the ``predicted``
        # policy reads it once per decision, as a plain attribute
        self.snapshot: Any = None
        self.redis: Any = None
        self.watcher: ModelWatcher | None = None
        self.recorder: SampleRecorder | None = None
        self.tap: DecisionTap | None = None
        self._predicted: dict[tuple[PredictedSettings, bool], PredictedPolicy] = {}
        self._in_use: list[PredictedPolicy] = []
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        config = self.config
        if uses_features(config):
            from ..features import FeatureStore
            from ..redis_conn import async_client

            if config.redis is None:
                raise ValueError("redis: the feature store needs a Redis URL (the CLI starts one)")
            self.redis = async_client(config.redis)
            self.features = FeatureStore(config.redis, [b.id for b in config.backends], metrics=self.metrics)
            self.snapshot = self.features.snapshot  # built by the constructor, before any hook
            self.features.on_snapshot.append(self._prefill)
            await self.features.start()
            await self._first_features(FIRST_FEATURES_WAIT_S)
            if self._wants_model(config):
                settings = self._settings(config)
                self.watcher = ModelWatcher(
                    self.holder,
                    config.model,
                    max_batch=max(settings.max_scored, len(config.backends)),
                    ood_tolerance=settings.ood_tolerance,
                    interval_s=settings.reload_interval_s,
                    redis=self.redis,
                    redis_key=MODEL_KEY,
                )
                await self.watcher.start()
            if config.record or config.record_stream:
                self.recorder = SampleRecorder(
                    path=config.record,
                    fraction=config.record_fraction,
                    redis=self.redis if config.record_stream else None,
                    stream_key=config.record_stream,
                )
                await self.recorder.start()
        self._task = asyncio.create_task(self._publish_loop(), name="presage-live-accuracy")

    async def _first_features(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.features.connected:  # set after the store's first full read
                return
            await asyncio.sleep(0.01)
        log.warning("no feature vectors read from Redis within %.1fs; starting anyway", timeout_s)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self.recorder is not None:
            await self.recorder.stop()
        if self.watcher is not None:
            await self.watcher.stop()
        if self.features is not None:
            await self.features.stop()
        if self.redis is not None:
            from ..redis_conn import aclose_client

            await aclose_client(self.redis)  # also the sentinels' connections with a Sentinel URL

    def backends_changed(self, config: ProxyConfig) -> None:
        if self.features is not None:
            self.features.set_backends([b.id for b in config.backends])

    # -- policies ---------------------------------------------------------------------------------
    def policy_for(self, config: ProxyConfig) -> tuple[Policy, DecisionTap]:
        predicted = None
        live: Policy
        if config.policy == "predicted":
            predicted = self._predicted_policy(config, shadow=False)
            live = predicted
        else:
            live = make_policy(config.policy)
        shadow = None
        in_use = [predicted] if predicted is not None else []
        if config.shadow == "predicted":
            scorer = self._predicted_policy(config, shadow=True)
            in_use.append(scorer)
            shadow = ShadowPolicy(live, scorer)
            live = shadow
        elif config.shadow is not None:
            log.warning("shadow: only 'predicted' can be shadowed; ignoring %r", config.shadow)
        self._in_use = in_use  # the policies a new snapshot is prefilled for (not a reload's old ones)
        explore = None
        if config.explore > 0:
            live = explore = ExplorePolicy(live, config.explore)
        self.tap = DecisionTap(
            policy_name=config.policy,
            metrics=self.metrics,
            predicted=predicted,
            shadow=shadow,
            explore=explore,
            recorder=self.recorder,
            features=self.features,
            rng=self.rng,
            wall_clock=self.wall_clock,
        )
        return live, self.tap

    def _predicted_policy(self, config: ProxyConfig, *, shadow: bool) -> PredictedPolicy:
        settings = self._settings(config)
        if shadow:  # a shadow scores every candidate, so the live choice always has a prediction
            settings = dataclasses.replace(settings, choices=0)
        key = (settings, shadow)
        policy = self._predicted.get(key)
        if policy is None:
            fallbacks = {reason: self.metrics.fallback_counter(reason) for reason in FALLBACK_REASONS}
            decisions = self.metrics.batched_decision_duration
            policy = PredictedPolicy(
                holder=self.holder,
                features=self,  # reads self.snapshot: the store may start after the policy
                fallback=PeakEwmaPolicy(),
                settings=settings,
                on_fallback=None if shadow else (lambda reason: fallbacks[reason].inc()),
                on_duration=None if shadow else decisions.observe,
                wall_clock=self.wall_clock,
            )
            if not shadow:  # pending feedback reaches the histogram before every metrics flush
                self.metrics.before_flush.append(policy.feedback.flush)
            self._predicted[key] = policy
        return policy

    def _prefill(self, snapshot: Any) -> None:
        """A new snapshot: let each predicted policy score its tables now, between requests."""
        self.snapshot = snapshot
        for policy in self._in_use:
            policy.prefill()

    @staticmethod
    def _wants_model(config: ProxyConfig) -> bool:
        return "predicted" in (config.policy, config.shadow)

    @staticmethod
    def _settings(config: ProxyConfig) -> PredictedSettings:
        return PredictedSettings.from_mapping(dict(config.predicted))

    # -- 1 Hz and slower --------------------------------------------------------------------------
    def sync(self) -> None:
        if self.tap is not None:
            self.tap.sync()
        snap = self.snapshot
        if snap is not None:
            ages = snap.ages(self.wall_clock())
            for bid, age in zip(snap.backend_ids, ages, strict=True):
                if age == age:
                    self.metrics.feature_age.labels(bid).set(float(age))

    def describe(self) -> dict[str, Any]:
        out = self.tap.describe(time.monotonic()) if self.tap is not None else {}
        out["model"] = self.holder.describe()
        if self.features is not None:
            rejected = getattr(self.features, "rejected", None)
            if rejected is not None:
                out["features_rejected"] = dict(rejected)
        return out

    async def _publish_loop(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_INTERVAL_S)
            predicted = self.tap.predicted if self.tap is not None else None
            if self.redis is None or predicted is None:
                continue
            predicted.feedback.flush()
            acc = predicted.accuracy.accuracy()
            if acc is None:
                continue
            try:
                await self.redis.set(LIVE_ACCURACY_KEY, f"{acc:.6f}", ex=int(PUBLISH_INTERVAL_S * 6))
            except Exception as exc:  # Redis down: the gauge still has it; retry next tick
                log.debug("live accuracy not published: %s", exc)
