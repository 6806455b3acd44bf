"""The proxy's feature store: agents' vectors from Redis, as one immutable snapshot for the hot path.

One background task owns Redis (STYLE.md item 4, Finagle ``Balancer.apply``). It subscribes to
``{prefix}fv-updates`` and, for every backend id published there, GETs that backend's vector; as a
safety net against pub/sub's at-most-once delivery (a message sent while the subscription was
reconnecting is lost), it also MGETs every backend's key each ``poll_interval_s``. Each accepted
vector or expiry produces a new frozen ``FeatureSnapshot`` (a float32 matrix, one row per
backend, columns in ``schema.feature_names(windows)`` order) and swaps ``store.snapshot``; request
handlers read that attribute once and never see a half-built state.

Bad input never crashes it: a vector that cannot be used is rejected, counted by reason in
``store.rejected`` (and ``presage_feature_vectors_rejected_total{reason}``) and the backend keeps
its last good vector until that goes stale. Reasons: those of ``schema.decode`` (``undecodable``,
``version``, ``field``, ``type``, ``length``, ``non_finite``) and ``windows`` (the agent runs other
windows than this proxy), ``backend`` (the vector names another backend than its key), ``future``
(sampled more than ``ttl_s`` ahead of our clock: it would never go stale), ``range`` (finite in
float64 but not in the float32 the model reads). orjson writes NaN as ``null`` and Python's json
writes ``NaN``/``Infinity``: both are counted as ``non_finite``, which is what they are.

Staleness. A vector older than ``ttl_s`` (by the wall-clock time its sample was *taken*) is stale:
its row is dropped at the next poll (``has_vector`` false, zeros), and ``ages(now)`` /
``is_stale`` say so at any instant in between. A stale or never-seen backend is unknown, never
idle. Redis down: the task reconnects with exponential backoff capped at ``poll_interval_s`` and
keeps expiring vectors meanwhile, so an outage turns into staleness, not into frozen features.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from metrics_agent import schema

from .redis_conn import aclose_client, async_client
from .tasks import cancel_and_wait

log = logging.getLogger("presage.features")

DEFAULT_TTL_S = 3.0  # = PredictedSettings.stale_after_s and the agent's default --ttl
DEFAULT_POLL_INTERVAL_S = 1.0
FIRST_BACKOFF_S = 0.05
REDIS_TIMEOUT_S = 2.0
REJECT_REASONS: tuple[str, ...] = (
    "undecodable", "version", "field", "type", "length", "non_finite",  # schema.decode
    "windows", "backend", "future", "range",  # checks against this proxy
)  # fmt: skip


@dataclass(frozen=True, slots=True, eq=False)
class FeatureSnapshot:
    """All backends' feature vectors at one instant; every array is read-only."""

    names: tuple[str, ...]  # column order: schema.feature_names(windows)
    backend_ids: tuple[str, ...]  # row order
    index: Mapping[str, int]  # backend id -> row
    matrix: np.ndarray  # float32 [n_backends, n_features]; zeros where has_vector is false
    sample_ts: np.ndarray  # float64 [n_backends] wall time the vector was sampled; NaN if never
    vector_seq: np.ndarray  # int64 [n_backends] the agent's sequence number; -1 if never
    has_vector: np.ndarray  # bool [n_backends] a usable (not yet expired) vector is held
    missing: tuple[tuple[str, ...], ...]  # per backend, metrics its agent does not have
    ttl_s: float
    seq: int  # snapshot number, +1 per build
    built_at: float  # wall time of the build

    def ages(self, now: float) -> np.ndarray:
        """Seconds since each backend's vector was sampled (NaN for never)."""
        return now - self.sample_ts

    def fresh(self, now: float) -> np.ndarray:
        """Bool mask: a vector is held and it is at most ``ttl_s`` old."""
        with np.errstate(invalid="ignore"):
            return self.has_vector & (self.ages(now) <= self.ttl_s)

    def is_stale(self, backend_id: str, now: float) -> bool:
        """True for an unknown backend, one without a vector, or one whose vector is too old."""
        i = self.index.get(backend_id)
        if i is None or not self.has_vector[i]:
            return True
        return not (now - self.sample_ts[i] <= self.ttl_s)

    def row(self, backend_id: str) -> np.ndarray | None:
        """The backend's (read-only) feature row, or None when no usable vector is held."""
        i = self.index.get(backend_id)
        if i is None or not self.has_vector[i]:
            return None
        return self.matrix[i]

    def describe(self, now: float) -> dict[str, dict[str, Any]]:
        """Per backend ``age_s``, ``stale``, ``seq`` and ``missing``, for the admin API."""
        out: dict[str, dict[str, Any]] = {}
        for i, bid in enumerate(self.backend_ids):
            ts = float(self.sample_ts[i])
            out[bid] = {
                "age_s": None if math.isnan(ts) else round(now - ts, 3),
                "stale": self.is_stale(bid, now),
                "seq": int(self.vector_seq[i]) if self.vector_seq[i] >= 0 else None,
                "missing": list(self.missing[i]),
            }
        return out


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@dataclass(slots=True)
class _Held:
    vec: schema.FeatureVector
    row: np.ndarray  # float32 values
    raw: bytes


# prometheus-client refuses a second registration of one name: one counter per registry.
_REJECT_COUNTERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _rejected_counter(metrics: Any) -> Any:
    existing = getattr(metrics, "feature_vectors_rejected", None)
    if existing is not None:
        return existing
    registry = getattr(metrics, "registry", None)
    if registry is None:
        return None
    counter = _REJECT_COUNTERS.get(registry)
    if counter is None:
        from prometheus_client import Counter

        counter = Counter(
            "presage_feature_vectors_rejected", "Feature vectors read from Redis and rejected, by reason.",
            ["reason"], registry=registry,
        )  # fmt: skip
        for reason in REJECT_REASONS:
            counter.labels(reason)
        _REJECT_COUNTERS[registry] = counter
    return counter


def _reclassify(raw: bytes, err: schema.SchemaError) -> str:
    """Name NaN/inf as such when a writer encoded them as JSON cannot (see the module docstring)."""
    if err.reason == "undecodable":
        try:
            obj = json.loads(raw)  # stdlib: accepts NaN, Infinity and 1e999
        except (ValueError, UnicodeDecodeError):
            return "undecodable"
        values = obj.get("values") if isinstance(obj, dict) else None
        if isinstance(values, list) and any(isinstance(v, float) and not math.isfinite(v) for v in values):
            return "non_finite"
    if err.reason == "type":
        with contextlib.suppress(ValueError):
            obj = json.loads(raw)
            if isinstance(obj, dict) and isinstance(obj.get("values"), list) and None in obj["values"]:
                return "non_finite"
    return err.reason


class FeatureStore:
    """Keeps ``snapshot`` current from Redis; see the module docstring."""

    def __init__(
        self,
        redis_url: str,
        backend_ids: Iterable[str],
        *,
        prefix: str = schema.DEFAULT_PREFIX,
        ttl_s: float = DEFAULT_TTL_S,
        windows: Sequence[int] = schema.DEFAULT_WINDOWS,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        metrics: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not ttl_s > 0:
            raise ValueError(f"features.ttl_s: must be positive, got {ttl_s!r}")
        if not poll_interval_s > 0:
            raise ValueError(f"features.poll_interval_s: must be positive, got {poll_interval_s!r}")
        self.redis_url = redis_url
        self.prefix = prefix
        self.ttl_s = float(ttl_s)
        self.windows = schema.check_windows(windows)
        self.names = schema.feature_names(self.windows)
        self.poll_interval_s = float(poll_interval_s)
        self.clock = clock
        self.channel = schema.updates_channel(prefix)
        self.rejected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
        self.on_snapshot: list[Callable[[FeatureSnapshot], None]] = []
        self.connected = False
        self.accepted = 0
        self.errors = 0
        self._counter = _rejected_counter(metrics) if metrics is not None else None
        self._counter_children = {r: self._counter.labels(r) for r in REJECT_REASONS} if self._counter else {}
        self._held: dict[str, _Held] = {}
        self._last_ts: dict[str, tuple[float, int, tuple[str, ...]]] = {}  # kept after expiry, for ages
        self._logged: set[tuple[str, str]] = set()
        self._last_bad: dict[str, bytes] = {}
        self._ids: tuple[str, ...] = ()
        self._idset: frozenset[str] = frozenset()
        self._seq = 0
        self._task: asyncio.Task[None] | None = None
        self._poll_due = True
        self._down_since: float | None = None
        self.snapshot: FeatureSnapshot = self._build(self.clock())
        self.set_backends(backend_ids)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="presage-feature-store")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self.connected = False

    def set_backends(self, backend_ids: Iterable[str]) -> None:
        """Follow a config reload: rows for exactly these ids, in this order; vectors kept by id.

        The new snapshot is published at once; vectors of added ids arrive with their agents' next
        push or the next poll (within ``poll_interval_s``).
        """
        ids = tuple(dict.fromkeys(backend_ids))
        if ids == self._ids:
            return
        self._ids, self._idset = ids, frozenset(ids)
        for gone in set(self._held) - set(ids):
            del self._held[gone]
        self._last_bad = {bid: v for bid, v in self._last_bad.items() if bid in ids}
        self._last_ts = {bid: v for bid, v in self._last_ts.items() if bid in ids}
        self._poll_due = True  # fetch the new ids' vectors at the next loop turn
        self._publish(self._build(self.clock()))

    # -- input: pure, no I/O ----------------------------------------------------------------------------

    def ingest(self, backend_id: str, raw: bytes | None, now: float) -> bool:
        """Take one value read from ``{prefix}fv:{backend_id}``; True when it replaced the held vector."""
        held = self._held.get(backend_id)
        if raw is None or (held is not None and raw == held.raw) or raw == self._last_bad.get(backend_id):
            return False  # key gone (TTL: the held vector will go stale), or nothing new
        self._last_bad.pop(backend_id, None)
        try:
            vec = schema.decode(raw)
        except schema.SchemaError as exc:
            return self._reject(backend_id, raw, _reclassify(raw, exc), str(exc))
        if vec.windows != self.windows:
            return self._reject(
                backend_id, raw, "windows", f"windows {list(vec.windows)}, proxy uses {list(self.windows)}"
            )
        if vec.backend != backend_id:
            return self._reject(backend_id, raw, "backend", f"vector names backend {vec.backend!r}")
        if vec.ts > now + self.ttl_s:
            return self._reject(backend_id, raw, "future", f"sampled {vec.ts - now:.1f} s in the future")
        if (held is not None and vec.ts <= held.vec.ts) or now - vec.ts > self.ttl_s:
            return False  # older than what we hold, or stale already: not bad, just not news
        with np.errstate(over="ignore"):
            row = np.asarray(vec.values, dtype=np.float32)
        if not np.isfinite(row).all():
            return self._reject(backend_id, raw, "range", "a value overflows float32")
        self._held[backend_id] = _Held(vec, row, bytes(raw))
        self._last_ts[backend_id] = (vec.ts, vec.seq, vec.missing)
        self.accepted += 1
        return True

    def _reject(self, backend_id: str, raw: bytes, reason: str, detail: str) -> bool:
        self._last_bad[backend_id] = bytes(raw)  # re-read by every poll: count it once
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        child = self._counter_children.get(reason)
        if child is not None:
            child.inc()
        if (backend_id, reason) not in self._logged:  # once per backend and reason, not per vector
            self._logged.add((backend_id, reason))
            log.warning(
                "rejected a feature vector for %s (%s); keeping the last good one", backend_id, detail
            )
        return False

    def expire(self, now: float) -> bool:
        """Drop vectors older than ``ttl_s``; True when any was dropped."""
        old = [bid for bid, h in self._held.items() if now - h.vec.ts > self.ttl_s]
        for bid in old:
            del self._held[bid]
        return bool(old)

    # -- snapshots ------------------------------------------------------------------------------------

    def _build(self, now: float) -> FeatureSnapshot:
        ids = self._ids
        n = len(ids)
        matrix = np.zeros((n, len(self.names)), dtype=np.float32)
        sample_ts = np.full(n, np.nan)
        vector_seq = np.full(n, -1, dtype=np.int64)
        has_vector = np.zeros(n, dtype=bool)
        missing: list[tuple[str, ...]] = []
        for i, bid in enumerate(ids):
            last = self._last_ts.get(bid)
            if last is not None:
                sample_ts[i], vector_seq[i] = last[0], last[1]
            missing.append(last[2] if last is not None else ())
            held = self._held.get(bid)
            if held is not None:
                matrix[i] = held.row
                has_vector[i] = True
        self._seq += 1
        return FeatureSnapshot(
            names=self.names,
            backend_ids=ids,
            index=MappingProxyType({bid: i for i, bid in enumerate(ids)}),
            matrix=_readonly(matrix),
            sample_ts=_readonly(sample_ts),
            vector_seq=_readonly(vector_seq),
            has_vector=_readonly(has_vector),
            missing=tuple(missing),
            ttl_s=self.ttl_s,
            seq=self._seq,
            built_at=now,
        )

    def _publish(self, snap: FeatureSnapshot) -> None:
        self.snapshot = snap  # one reference swap: readers see the old or the new, never a mix
        for callback in list(self.on_snapshot):
            try:
                callback(snap)
            except Exception:  # a hook's bug must not stop feature updates
                log.exception("on_snapshot callback failed")

    def apply(self, values: Mapping[str, bytes | None], now: float | None = None) -> bool:
        """Ingest values read for some backends, expire old ones, publish a snapshot if anything changed."""
        now = self.clock() if now is None else now
        changed = False
        for bid, raw in values.items():
            if bid in self._idset:  # a reload may have removed it while its value was in flight
                changed |= self.ingest(bid, raw, now)
        changed |= self.expire(now)
        if changed:
            self._publish(self._build(now))
        return changed

    # -- the background task ------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = FIRST_BACKOFF_S
        while True:
            try:
                await self._session()  # returns only by raising
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # redis errors, OSError, timeouts: reconnect, never die
                if self.connected:  # it was up: a fresh outage starts with a short wait
                    backoff = FIRST_BACKOFF_S
                self._went_down(exc)
            self.apply({})  # keep expiring while Redis is away
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.poll_interval_s)

    def _went_down(self, exc: Exception) -> None:
        self.errors += 1
        self.connected = False
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("feature store lost Redis (%s: %s); reconnecting", type(exc).__name__, exc)

    async def _session(self) -> None:
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        client = async_client(
            self.redis_url,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        pubsub = None
        try:
            await client.initialize()  # a cluster client must learn the slot map before pubsub()
            pubsub = client.pubsub()
            await pubsub.subscribe(self.channel)
            await self._poll(client)  # anything published before we subscribed
            self.connected = True
            if self._down_since is not None:
                log.info("feature store reconnected after %.1f s", time.monotonic() - self._down_since)
                self._down_since = None
            await self._listen(client, pubsub)
        finally:
            if pubsub is not None:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            with contextlib.suppress(Exception):
                await aclose_client(client)

    async def _listen(self, client: Any, pubsub: Any) -> None:
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + self.poll_interval_s
        while True:
            msg = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=max(0.0, next_poll - loop.time())
            )
            ids: set[str] = set()
            while msg is not None:  # drain what is queued: one fetch and one snapshot per batch
                if msg.get("type") == "message":
                    data = msg["data"]
                    ids.add(data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data))
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
            if self._poll_due or loop.time() >= next_poll:
                await self._poll(client)
                next_poll = loop.time() + self.poll_interval_s
            elif ids:
                wanted = [bid for bid in self._ids if bid in ids]
                if wanted:
                    await self._fetch(client, wanted)

    async def _fetch(self, client: Any, ids: Sequence[str]) -> None:
        keys = [schema.vector_key(bid, self.prefix) for bid in ids]
        if len(keys) == 1:
            raws = [await client.get(keys[0])]
        elif hasattr(client, "mget_nonatomic"):  # cluster: keys live in different slots
            raws = await client.mget_nonatomic(keys)
        else:
            raws = await client.mget(keys)
        self.apply(dict(zip(ids, raws, strict=True)))

    async def _poll(self, client: Any) -> None:
        self._poll_due = False
        ids = self._ids
        if ids:
            await self._fetch(client, ids)
        else:
            self.apply({})
