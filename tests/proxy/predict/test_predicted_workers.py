"""No herding: two worker processes reading the same features do not pile onto the best backend.

A real ``presage proxy --workers 2`` process, a real Redis, a real ONNX model. The agents say the
backends' queues are 0, 1, 2 and 20 requests long and nothing changes between updates: the
situation in which every decider that took the argmin would send everything to ``b1``. With the
default power of d choices on predictions, each decision scores three random candidates, so the
best backend takes about three quarters of the traffic (it wins every triple it is drawn into: 3
of 4), the second the rest, and the two slowest none.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from metrics_agent import schema
from proxy.redis_conn import RedisEndpoint, start_embedded, sync_client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisEndpoint]:
    with start_embedded(tmp_path / "redis") as server:
        yield server


@contextlib.contextmanager
def agents_reporting(url: str, queues: dict[str, float]) -> Iterator[None]:
    """Push the same queue lengths every 0.3 s in the agents' wire format, as agents would."""
    client = sync_client(url)
    names = schema.feature_names(schema.DEFAULT_WINDOWS)
    col = names.index("app_queue_length")
    stop = threading.Event()

    def push() -> None:
        seq = 0
        while True:
            seq += 1
            for backend, queue in queues.items():
                values = [0.0] * len(names)
                values[col] = queue
                vec = schema.FeatureVector(backend, seq, time.time(), schema.DEFAULT_WINDOWS, tuple(values))
                client.set(schema.vector_key(backend), schema.encode(vec), ex=10)
                client.publish(schema.updates_channel(), backend)
            if stop.wait(0.3):
                return

    thread = threading.Thread(target=push, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        client.close()


@pytest.fixture
def proxy_process(
    tmp_path: Path, redis_server: RedisEndpoint, queue_model_dir: Path, backends: Any
) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(urls: list[str]) -> tuple[str, str]:
        port, admin = free_port(), free_port()
        config = tmp_path / "presage.yaml"
        # herding is the subject here: the budget and accuracy safeguards are tested elsewhere, and
        # the toy model is not calibrated to these loopback backends
        config.write_text(json.dumps({"predicted": {"min_budget_s": 0.01, "min_accuracy": 0.0}}))
        cmd = [
            sys.executable, "-m", "proxy.main", "-c", str(config), "--workers", "2",
            "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
            "--policy", "predicted", "--redis", redis_server.url, "--model", str(queue_model_dir),
            "--explain-header", "true", "--access-log", "off", "--drain-delay-s", "0", "--grace-s", "1",
        ]  # fmt: skip
        for i, url in enumerate(urls, 1):
            cmd += ["--backend", f"b{i}={url}"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        procs.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, "presage proxy exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
            except OSError:
                time.sleep(0.1)
        raise AssertionError("presage proxy did not become ready")

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_two_workers_spread_by_prediction_instead_of_herding(
    redis_server: RedisEndpoint, backends: Any, proxy_process: Any
) -> None:
    started = await backends(4)
    with agents_reporting(redis_server.url, {"b1": 0.0, "b2": 1.0, "b3": 2.0, "b4": 20.0}):
        url, admin = proxy_process([b.url for b in started])
        counts, reasons, metrics = await send(url, admin, 600)
    assert reasons == {"reason=model": 600}  # the model decided every time, in both workers
    share = {b: counts[b] / 600 for b in ("b1", "b2", "b3", "b4")}
    assert 0.62 < share["b1"] < 0.87, share  # preferred, but not a herd
    assert 0.13 < share["b2"] < 0.38, share
    assert share["b3"] == share["b4"] == 0.0, share  # never the best of any three
    assert "presage_decision_duration_seconds_count" in metrics


Counts = collections.Counter[str]


async def send(url: str, admin: str, n: int) -> tuple[Counts, Counts, str]:
    counts: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    # a fresh connection per request, so SO_REUSEPORT spreads them over both workers
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:
        for _ in range(n):
            async with client.get(url + "/headers") as resp:
                await resp.read()
                assert resp.status == 200
                counts[resp.headers["x-presage-backend"]] += 1
                reasons[resp.headers["x-presage-decision"].split(";")[0]] += 1
        async with client.get(admin + "/metrics") as resp:
            metrics = await resp.text()
    return counts, reasons, metrics
