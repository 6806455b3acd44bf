"""Prometheus metrics: registered once per worker, per-backend children cached.

Names follow the contract: prefix ``presage_``, base units, ``_total`` on counters, a ``backend``
label and no high-cardinality labels. The request path never calls ``.labels()``: every
per-backend child is created when a backend set is installed (``BackendMetrics``), and the
``requests_total`` child for a status code is created on its first use and then cached (linkerd's
``MetricFamilies::register``).

The request path does not touch prometheus-client values either: each observation costs a lock
(and, with several workers, an mmap write), five of them per request. ``BatchedCounter`` and
``BatchedHistogram`` add to plain numbers (a histogram finds its bucket with ``bisect``, as
prometheus-client's own ``observe`` would) and ``Metrics.flush`` moves the sums into the real
children once a second and before every scrape, so ``/metrics`` is never staler than a second
for another worker and exact for the worker answering.

With ``--workers N > 1`` the parent points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory
before starting the workers; values then live in per-process mmap files and ``/metrics`` on any
worker aggregates all of them (prometheus-client's multiprocess mode). Gauges declare how they
aggregate across workers: in-flight sums, ``up`` takes the minimum (down in any worker shows),
``ejected`` the maximum.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from . import __version__

if TYPE_CHECKING:  # numpy only where predictions are made: a heuristic-only proxy never loads it
    import numpy as np

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNROUTED = "none"
CONTENT_TYPE = CONTENT_TYPE_LATEST

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
# A routing decision should cost microseconds; these resolve 5 us .. 10 ms.
DECISION_BUCKETS: tuple[float, ...] = (
    5e-6, 1e-5, 2e-5, 3e-5, 5e-5, 7.5e-5, 1e-4, 1.5e-4, 2e-4, 3e-4, 5e-4, 7.5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2,
)  # fmt: skip
ERROR_RATIO_BUCKETS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def use_multiprocess_values() -> None:
    """Re-pick prometheus-client's value class after the env var was set in this process.

    The class is chosen when ``prometheus_client.values`` is imported; a worker forked from a
    parent that imported it earlier must choose again before creating any metric.
    """
    values.ValueClass = values.get_value_class()


class BatchedCounter:
    """A counter child whose increments are summed locally and added on ``flush``."""

    __slots__ = ("child", "pending")

    def __init__(self, child: Counter) -> None:
        self.child = child
        self.pending = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.pending += amount

    def flush(self) -> None:
        if self.pending:
            pending, self.pending = self.pending, 0.0
            self.child.inc(pending)


class BatchedHistogram:
    """A histogram child whose observations are bucketed locally and added on ``flush``.

    Bucket ``i`` counts values ``<= bounds[i]`` and above the previous bound, exactly as
    prometheus-client's ``Histogram.observe`` files them (its buckets are cumulated at export).
    """

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: Histogram) -> None:
        self.child = child
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def observe_many(self, values: np.ndarray) -> None:
        """``observe`` for each of ``values`` in one numpy pass (``searchsorted`` left = ``bisect_left``)."""
        import numpy as np

        if not len(values):
            return
        idx = np.searchsorted(self.bounds, values, side="left")
        added = np.bincount(idx, minlength=len(self.bounds)).tolist()
        self.counts = [a + b for a, b in zip(self.counts, added, strict=True)]
        self.total += float(values.sum())

    def flush(self) -> None:
        counts = self.counts
        if not any(counts):
            return
        self.counts, self.total, total = [0] * len(self.bounds), 0.0, self.total
        for bucket, n in zip(self.child._buckets, counts, strict=True):
            if n:
                bucket.inc(n)
        self.child._sum.inc(total)


class BufferedHistogram(BatchedHistogram):
    """A batched histogram for the decision path: ``observe`` is the bound ``append`` of a plain
    list (one C call, no Python frame and no ``bisect`` per value); ``flush`` buckets the values
    with numpy (``searchsorted`` left = ``bisect_left``) before moving them into the child.

    Memory is bounded by the metrics flush, once a second and before every scrape: 8 bytes a
    value. Only workers that predict observe it, so only they import numpy here.
    """

    __slots__ = ("observe", "values")

    def __init__(self, child: Histogram) -> None:
        super().__init__(child)
        self.values: list[float] = []
        self.observe: Callable[[float], None] = self.values.append  # type: ignore[assignment]

    def bucket(self) -> None:
        """Move the buffered values into ``counts``/``total`` (what ``observe`` would have done)."""
        if self.values:
            import numpy as np

            values = np.fromiter(self.values, dtype=np.float64, count=len(self.values))  # 2x np.array's speed
            self.values.clear()
            self.observe_many(values)

    def flush(self) -> None:
        self.bucket()
        super().flush()


@dataclass(slots=True)
class RequestCounters:
    """``presage_requests_total`` children of one backend, created on a code's first use."""

    backend: str
    family: Counter
    batched: list[BatchedCounter | BatchedHistogram]
    by_code: dict[tuple[int, str], BatchedCounter] = field(default_factory=dict)

    def request(self, status: int, protocol: str) -> BatchedCounter:
        counter = self.by_code.get((status, protocol))
        if counter is None:
            counter = BatchedCounter(self.family.labels(self.backend, str(status), protocol))
            self.by_code[(status, protocol)] = counter
            self.batched.append(counter)
        return counter


@dataclass(slots=True)
class BackendMetrics:
    """The cached children for one backend."""

    backend: str
    upstream_duration: BatchedHistogram
    in_flight: Gauge
    up: Gauge
    ejected: Gauge
    ejections: Counter
    predicted_latency: Gauge
    feature_age: Gauge
    requests: RequestCounters

    def request(self, status: int, protocol: str) -> BatchedCounter:
        return self.requests.request(status, protocol)


class Metrics:
    """Every Presage metric family, on one registry per worker."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "presage_requests", "Requests answered, by backend, status code and protocol.",
            ["backend", "code", "protocol"], registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            "presage_request_duration_seconds", "Time from request received to response sent.",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.upstream_duration = Histogram(
            "presage_upstream_duration_seconds", "Time from dispatch to the backend's response headers.",
            ["backend"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "presage_in_flight", "Requests in flight to a backend.", ["backend"],
            multiprocess_mode="livesum", registry=r,
        )  # fmt: skip
        self.backend_up = Gauge(
            "presage_backend_up", "1 when the backend passes health checks.", ["backend"],
            multiprocess_mode="livemin", registry=r,
        )  # fmt: skip
        self.backend_ejected = Gauge(
            "presage_backend_ejected", "1 while the backend is ejected as an outlier.", ["backend"],
            multiprocess_mode="livemax", registry=r,
        )  # fmt: skip
        self.retries = Counter("presage_retries", "Requests retried on another backend.", registry=r)
        self.ejections = Counter("presage_ejections", "Outlier ejections.", ["backend"], registry=r)
        self.config_reloads = Counter(
            "presage_config_reloads", "SIGHUP config reloads by result.", ["result"], registry=r
        )
        self.build_info = Gauge(
            "presage_build_info", "Presage build information.", ["version", "python"],
            multiprocess_mode="max", registry=r,
        )  # fmt: skip
        self._prediction_metrics(r)
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.batched: list[BatchedCounter | BatchedHistogram] = []
        self.request_duration_batched = self._batch(BatchedHistogram(self.request_duration))
        self.batched_decision_duration = self._batch(BufferedHistogram(self.decision_duration))
        self.batched_prediction_error = self._batch(BatchedHistogram(self.prediction_error))
        self.batched_fallbacks: dict[str, BatchedCounter] = {}  # by reason, see ``fallback_counter``
        # run first by ``flush``: request-path batches kept elsewhere (the prediction feedback)
        # empty themselves into the batched children above before those are flushed
        self.before_flush: list[Callable[[], None]] = []
        # requests answered without a backend (refused, no backend available): backend="none"
        self.unrouted = RequestCounters(UNROUTED, self.requests, self.batched)
        for result in ("success", "error"):
            self.config_reloads.labels(result)

    def _prediction_metrics(self, r: CollectorRegistry) -> None:
        self.predicted_latency = Gauge(
            "presage_predicted_latency_seconds", "Latest predicted RTT per backend.", ["backend"],
            multiprocess_mode="livemax", registry=r,
        )  # fmt: skip
        self.prediction_error = Histogram(
            "presage_prediction_error_ratio", "|predicted - observed| / observed RTT.",
            buckets=ERROR_RATIO_BUCKETS, registry=r,
        )  # fmt: skip
        self.decision_duration = Histogram(
            "presage_decision_duration_seconds", "Wall time of one routing decision.",
            buckets=DECISION_BUCKETS, registry=r,
        )  # fmt: skip
        self.feature_age = Gauge(
            "presage_feature_age_seconds", "Age of the newest feature vector per backend.", ["backend"],
            multiprocess_mode="livemax", registry=r,
        )  # fmt: skip
        self.fallbacks = Counter(
            "presage_fallbacks", "Decisions routed by the fallback policy, by reason.", ["reason"],
            registry=r,
        )  # fmt: skip
        self.live_accuracy = Gauge(
            "presage_live_accuracy_ratio", "Rolling 1 - MAPE of live predictions.",
            multiprocess_mode="livemin", registry=r,
        )  # fmt: skip
        # the factor every prediction is multiplied by (predictor_runtime.calibration); a worker far
        # from 1 runs on a host slower or faster than the one the bundle was trained on
        self.calibration_scale = Gauge(
            "presage_prediction_calibration_ratio",
            "Live refit of the model's level: the factor on every prediction (1: the bundle's own).",
            multiprocess_mode="livemax", registry=r,
        )  # fmt: skip
        self.shadow_live_accuracy = Gauge(
            "presage_shadow_live_accuracy_ratio",
            "Rolling 1 - MAPE of the shadow policy's predictions for the live policy's choices.",
            multiprocess_mode="livemin", registry=r,
        )  # fmt: skip
        self.shadow_choices = Counter(
            "presage_shadow_choices", "Backends the shadow policy would have chosen.", ["backend"],
            registry=r,
        )  # fmt: skip
        # NaN until enough observations: an accuracy of 0 would be a (terrible) measurement
        self.live_accuracy.set(math.nan)
        self.shadow_live_accuracy.set(math.nan)

    def _batch(self, metric: BatchedHistogram) -> BatchedHistogram:
        self.batched.append(metric)
        return metric

    def fallback_counter(self, reason: str) -> BatchedCounter:
        """``presage_fallbacks_total{reason}``, counted locally and added on ``flush``: under the
        accuracy safeguard every request falls back, and ``.labels().inc()`` costs microseconds."""
        counter = self.batched_fallbacks.get(reason)
        if counter is None:
            counter = self.batched_fallbacks[reason] = BatchedCounter(self.fallbacks.labels(reason))
            self.batched.append(counter)
        return counter

    def flush(self) -> None:
        """Move batched request-path observations into prometheus-client's values."""
        for hook in self.before_flush:
            hook()
        for metric in self.batched:
            metric.flush()

    def for_backend(self, backend: str) -> BackendMetrics:
        return BackendMetrics(
            backend=backend,
            upstream_duration=self._batch(BatchedHistogram(self.upstream_duration.labels(backend))),
            in_flight=self.in_flight.labels(backend),
            up=self.backend_up.labels(backend),
            ejected=self.backend_ejected.labels(backend),
            ejections=self.ejections.labels(backend),
            predicted_latency=self.predicted_latency.labels(backend),
            feature_age=self.feature_age.labels(backend),
            requests=RequestCounters(backend, self.requests, self.batched),
        )

    def forget_backend(self, backend: str, children: BackendMetrics | None = None) -> None:
        """Drop a removed backend's series so a reload does not leave stale ones behind."""
        if children is not None:
            children.upstream_duration.flush()
            gone = {id(children.upstream_duration), *(id(c) for c in children.requests.by_code.values())}
            self.batched[:] = [m for m in self.batched if id(m) not in gone]  # one list, shared
            for status, protocol in children.requests.by_code:
                with contextlib.suppress(KeyError):
                    self.requests.remove(backend, str(status), protocol)
        for family in (
            self.upstream_duration, self.in_flight, self.backend_up, self.backend_ejected,
            self.ejections, self.predicted_latency, self.feature_age,
        ):  # fmt: skip
            with contextlib.suppress(KeyError):
                family.remove(backend)

    def render(self) -> bytes:
        self.flush()
        if multiprocess_enabled():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
