"""Push feature vectors to Redis from a background thread, surviving any Redis outage.

Per vector, one pipelined round trip (no MULTI: the three writes need not be atomic):

* ``SET {prefix}fv:{id} <vector> PX ttl`` - the current vector; the TTL makes a dead agent show up
  as a missing vector (stale), never as a healthy idle backend;
* ``PUBLISH {prefix}fv-updates <id>`` - wakes the proxy's feature store at once;
* ``XADD {prefix}fvh:{id} MAXLEN ~ N * fv <vector>`` - capped history for training (``~`` lets Redis
  trim whole radix-tree nodes, which is far cheaper than an exact cap).

The sampling loop never waits for Redis: it hands each vector to a one-slot mailbox and a pusher
thread sends the newest one (a vector superseded before it could be sent is dropped and counted:
only the newest matters to the proxy). On failure the thread retries with exponential backoff
capped at one agent interval, so after Redis returns the agent is pushing again within one interval;
the outage is logged when it starts and when it ends. redis-py re-opens the connection by itself
on the next command, so the client object lives for the whole run.

URL forms (the same grammar as ``proxy.redis_conn``; the agent does not import the proxy):
``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS), ``unix://[[user]:password@]/path.sock[?db=N]``,
``redis+sentinel://[:password@]host:port[,host:port...]/service[/db][?sentinel_password=P]`` and
``redis+cluster://[:password@]host:port[,host:port...]`` (``rediss+`` for TLS).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from . import schema

log = logging.getLogger("presage.agent")

HISTORY_FIELD = "fv"
FIRST_BACKOFF_S = 0.05


def _nodes(netloc: str, url: str) -> list[tuple[str, int]]:
    hosts = netloc.rpartition("@")[2]
    nodes = []
    for part in hosts.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--redis: expected host:port[,host:port...] in {url!r}")
        nodes.append((host.strip("[]"), int(port)))
    return nodes


def _password(netloc: str) -> tuple[str | None, str | None]:
    userinfo, at, _ = netloc.rpartition("@")
    if not at:
        return None, None
    user, _, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) or None)


def make_client(url: str, *, timeout_s: float) -> Any:
    """A synchronous client for any supported URL; timeouts bound every call, redis-py retries off."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    common: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if scheme in ("redis", "rediss", "unix"):
        return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **common)
    base, plus, kind = scheme.partition("+")
    if not plus or base not in ("redis", "rediss") or kind not in ("sentinel", "cluster"):
        raise ValueError(f"--redis: unsupported URL scheme {parts.scheme!r} in {url!r}")
    user, password = _password(parts.netloc)
    auth: dict[str, Any] = {"username": user, "password": password, "ssl": base == "rediss"}
    nodes = _nodes(parts.netloc, url)
    if kind == "cluster":
        from redis.cluster import ClusterNode

        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes], **auth, **common)
    from redis.sentinel import Sentinel

    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError(
            f"--redis: a sentinel URL names the service: redis+sentinel://host:port/SERVICE ({url!r})"
        )
    db = int(path[1]) if len(path) > 1 and path[1].isdigit() else 0
    # The sentinels' own password, when they have one, is the ``sentinel_password`` query parameter.
    query = dict(parse_qsl(parts.query))
    sentinel_kwargs = {"password": query.get("sentinel_password"), **common}
    sentinel = Sentinel(nodes, sentinel_kwargs=sentinel_kwargs, **auth, **common)
    return sentinel.master_for(path[0], db=db)


class Pusher:
    """Sends the newest submitted vector; never raises out of the thread."""

    def __init__(
        self,
        client: Any,
        backend_id: str,
        *,
        prefix: str = schema.DEFAULT_PREFIX,
        ttl_s: float,
        history: int,
        interval_s: float,
    ) -> None:
        self.client = client
        self._cluster = isinstance(client, RedisCluster)
        self.backend_id = backend_id
        self.key = schema.vector_key(backend_id, prefix)
        self.history_key = schema.history_key(backend_id, prefix)
        self.channel = schema.updates_channel(prefix)
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self.history = history
        self.max_backoff_s = interval_s
        self.pushed = 0
        self.failures = 0
        self.superseded = 0
        self.down_since: float | None = None
        self._pending: bytes | None = None
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="presage-pusher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, payload: bytes) -> None:
        with self._cond:
            if self._pending is not None:
                self.superseded += 1
            self._pending = payload
            self._cond.notify()

    def close(self, timeout_s: float = 2.0) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        try:
            self.client.close()
            manager = getattr(getattr(self.client, "connection_pool", None), "sentinel_manager", None)
            for sentinel in getattr(manager, "sentinels", ()):  # a Sentinel client's own connections
                sentinel.close()
        except Exception as exc:  # already broken: nothing left to release
            log.debug("closing the Redis client: %s", exc)

    def push_now(self, payload: bytes) -> None:
        """One pipelined SET + PUBLISH (+ XADD); raises on failure (used by the thread and tests)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.key, payload, px=self.ttl_ms)
        if not self._cluster:
            pipe.publish(self.channel, self.backend_id)
        if self.history > 0:
            pipe.xadd(self.history_key, {HISTORY_FIELD: payload}, maxlen=self.history, approximate=True)
        pipe.execute()
        if self._cluster:  # redis-py refuses PUBLISH in a cluster pipeline; it is cluster-wide anyway
            self.client.publish(self.channel, self.backend_id)

    def _take(self) -> bytes | None:
        with self._cond:
            while self._pending is None and not self._closing:
                self._cond.wait()
            payload, self._pending = self._pending, None
            return None if self._closing else payload

    def _run(self) -> None:
        backoff = FIRST_BACKOFF_S
        while (payload := self._take()) is not None:
            try:
                self.push_now(payload)
            except Exception as exc:  # redis.RedisError, OSError, or anything else: never die
                self._failed(payload, exc)
                with self._cond:
                    self._cond.wait_for(lambda: self._closing, timeout=backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            backoff = FIRST_BACKOFF_S
            self.pushed += 1
            if self.down_since is not None:
                log.info("redis is back after %.1f s; pushing again", time.monotonic() - self.down_since)
                self.down_since = None

    def _failed(self, payload: bytes, exc: Exception) -> None:
        self.failures += 1
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("redis unavailable (%s: %s); sampling goes on, retrying", type(exc).__name__, exc)
        with self._cond:
            if self._pending is None:
                self._pending = payload  # retry it unless a newer vector arrived meanwhile
