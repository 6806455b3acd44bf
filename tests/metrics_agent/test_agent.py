"""`presage agent` as a real process pushing to a real Redis server."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from loadtest.bench_agent import gauge_page
from metrics_agent import cli, schema
from proxy.redis_conn import RedisEndpoint, start_embedded

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def redis_ep() -> Iterator[RedisEndpoint]:
    workdir = tempfile.mkdtemp(prefix="presage-t-", dir="/tmp")  # short: unix socket paths are limited
    ep = start_embedded(workdir)
    try:
        yield ep
    finally:
        ep.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def app_metrics() -> Iterator[str]:
    body = b"presage_backend_in_flight 7\npresage_backend_queue_length 2\npresage_backend_workers 4\n"
    with gauge_page(body) as url:
        yield url


def start_agent(log: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "agent", *args],
            cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )  # fmt: skip


def stop_agent(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def wait_for(predicate, timeout_s: float = 10.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_agent_pushes_versioned_vectors_with_ttl_history_and_notifications(
    redis_ep: RedisEndpoint, app_metrics: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_ep.url)
    pubsub = client.pubsub()
    pubsub.subscribe("t:fv-updates")
    log = tmp_path / "agent.log"
    # some flags from the environment, some from the command line
    agent = start_agent(
        log, "--interval", "0.1", "--ttl", "1.5", "--history", "50", "--pid", str(os.getpid()),
        "--scrape", app_metrics,
        env={"PRESAGE_BACKEND_ID": "b1", "PRESAGE_REDIS": redis_ep.url, "PRESAGE_PREFIX": "t:"},
    )  # fmt: skip
    try:
        raw = wait_for(lambda: client.get("t:fv:b1"), what="a vector")
        vec = schema.decode(raw)
        assert vec.backend == "b1" and vec.windows == schema.DEFAULT_WINDOWS
        wait_for(lambda: schema.decode(client.get("t:fv:b1")).seq >= 5, what="five more vectors")
        vec = schema.decode(client.get("t:fv:b1"))
        assert abs(time.time() - vec.ts) < 5
        values = vec.as_dict()
        assert values["app_in_flight"] == 7.0 and values["app_workers"] == 4.0
        assert values["proc_rss_bytes"] > 0 and "proc_rss_bytes" not in vec.missing
        assert set(schema.CGROUP_METRICS) <= set(vec.missing)  # no --cgroup given
        assert 0 < client.pttl("t:fv:b1") <= 1500
        history = client.xrange("t:fvh:b1")
        assert len(history) >= 5
        assert schema.decode(history[-1][1][b"fv"]).seq >= schema.decode(history[0][1][b"fv"]).seq
        notes = [pubsub.get_message(timeout=1.0) for _ in range(4)]
        assert {n["data"] for n in notes if n and n["type"] == "message"} == {b"b1"}
        assert agent.poll() is None
    finally:
        rc = stop_agent(agent)
        pubsub.close()
        client.close()
    assert rc == 0
    assert "stopped after" in log.read_text()


def test_bad_flags_exit_2_naming_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--interval", "0.5"]) == 2
    assert "--backend-id is required" in capsys.readouterr().err
    assert cli.main(["--backend-id", "b", "--interval", "0.05"]) == 2
    assert "--interval: must be at least 0.1" in capsys.readouterr().err
    assert cli.main(["--backend-id", "b", "--interval", "1", "--ttl", "0.5"]) == 2
    assert "--ttl" in capsys.readouterr().err
    assert cli.main(["--backend-id", "b", "--redis", "http://x"]) == 2
    assert "--redis" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["--backend-id", "b", "--windows", "5,5"])
    assert exc.value.code == 2
    assert "--windows" in capsys.readouterr().err
    # a real process: a pid that cannot exist (above pid_max) is a configuration error, not a crash
    log = tmp_path / "agent.log"
    proc = start_agent(log, "--backend-id", "b", "--pid", "4206649", "--redis", "redis://127.0.0.1:1")
    assert proc.wait(20) == 2
    assert "--pid: no process 4206649" in log.read_text()


def test_environment_values_are_checked_and_the_command_line_wins() -> None:
    env = {"PRESAGE_BACKEND_ID": "from-env", "PRESAGE_INTERVAL": "0.2", "PRESAGE_WINDOWS": "5,20"}
    cfg, level = cli.load_config(["--interval", "0.3"], env)
    assert (cfg.backend_id, cfg.interval, cfg.windows, level) == ("from-env", 0.3, (5, 20), "INFO")
    with pytest.raises(cli.UsageError, match=r"--interval \(from PRESAGE_INTERVAL\)"):
        cli.load_config([], {**env, "PRESAGE_INTERVAL": "fast"})
    with pytest.raises(cli.UsageError, match="--log-level"):
        cli.load_config(["--log-level", "loud"], env)


def test_a_vector_is_pushed_as_one_pipelined_round_trip(redis_ep: RedisEndpoint) -> None:
    from metrics_agent.pusher import Pusher, make_client

    pusher = Pusher(make_client(redis_ep.url, timeout_s=1.0), "b2", ttl_s=2.0, history=0, interval_s=0.5)
    try:
        payload = orjson.dumps({"not": "checked by the pusher"})
        pusher.push_now(payload)
        reader = redis.Redis.from_url(redis_ep.url)
        assert reader.get("presage:fv:b2") == payload
        assert not reader.exists("presage:fvh:b2")  # history 0: no stream
        reader.close()
    finally:
        pusher.close()
