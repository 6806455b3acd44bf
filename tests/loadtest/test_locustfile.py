"""The locustfile, always in a subprocess: importing Locust monkeypatches the interpreter (gevent),
which must not happen inside pytest. A real ``locust --headless`` run against a real aiohttp server
on loopback, plus the shapes' user counts read from a child interpreter."""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None, reason="locust is not installed (pip install 'presage[load]')"
)


def child_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRESAGE_LOCUST_")}
    env.update({f"PRESAGE_LOCUST_{k}": v for k, v in settings.items()})
    return env


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[tuple[str, str]]]]:
    seen: list[tuple[str, str]] = []  # (size query, class header)

    async def work(request: web.Request) -> web.Response:
        seen.append((request.query.get("size", ""), request.headers.get("X-Presage-Class", "")))
        return web.Response(body=b"ok", headers={"X-Presage-Backend": "b1"})

    app = web.Application()
    app.router.add_get("/work", work)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


async def test_headless_locust_run_sends_sized_requests_and_writes_csv(
    server: tuple[str, list[tuple[str, str]]], tmp_path: Path
) -> None:
    url, seen = server
    env = child_env(TRACE="step", LOW="10", HIGH="30", USER_RPS="5", MIX="64:1,256:1", SEED="3")
    args = ["-f", str(LOCUSTFILE), "--headless", "--host", url, "--csv", str(tmp_path / "locust"), "-t", "4s"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "locust",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), 45.0)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()[-2000:]

    with (tmp_path / "locust_stats.csv").open() as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    total = int(rows["Aggregated"]["Request Count"])
    assert total > 0 and int(rows["Aggregated"]["Failure Count"]) == 0
    assert set(rows) == {"Aggregated", "/work size=64", "/work size=256"}
    # Locust kills the users at the end without recording what they still had in flight (<= 1 each)
    assert total <= len(seen) <= total + 6
    assert {(q, h) for q, h in seen} == {("64", "64"), ("256", "256")}  # size as query and class header


SHAPE_PROBE = """
import json, math
import loadtest.locustfile as lf
from locust import LoadTestShape
shapes = [n for n, v in vars(lf).items()
          if isinstance(v, type) and issubclass(v, LoadTestShape) and not v.abstract]
shape = getattr(lf, shapes[0])()
trace = shape.trace()
times = [0.0, 1.5, 2.5, 3.9, 4.0, 9.0]
print(json.dumps({
    "shapes": shapes,
    "ticks": [shape.tick_at(t) for t in times],
    "want": [math.ceil(trace.rate_at(t) / 4.0 - 1e-9) if t < trace.duration_s else None for t in times],
}))
"""


@pytest.mark.parametrize("kind", ["constant", "step", "dynamic"])
def test_the_trace_named_in_the_environment_picks_the_one_active_shape(kind: str) -> None:
    env = child_env(TRACE=kind, LOW="20", HIGH="100", PERIOD="1", DURATION="4", USER_RPS="4", SEED="9")
    done = subprocess.run(
        [sys.executable, "-c", SHAPE_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["shapes"] == [f"{kind.capitalize()}Shape"]
    users = [tick[0] if tick else None for tick in probe["ticks"]]
    assert users == probe["want"]
    assert users[-2:] == [None, None]  # the trace's duration ends the run
    if kind == "constant":
        assert set(users[:-2]) == {15}  # midpoint 60 req/s at 4 req/s per user
    if kind == "step":
        assert users[:4] == [5, 5, 25, 25]


def test_a_bad_setting_stops_locust_naming_the_variable() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import loadtest.locustfile"],
        cwd=ROOT,
        env=child_env(LOW="fast"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "PRESAGE_LOCUST_LOW='fast'" in done.stderr
