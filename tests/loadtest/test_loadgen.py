"""The open-loop generator against a real aiohttp server on loopback: sends keep to the schedule
however slow the answers, drops and errors are counted, and the summary judges windows right."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from loadtest.loadgen import LoadResult, run_open_loop
from loadtest.traces import ConstantTrace, poisson_arrivals

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    """Answers /work after ``sleep_s``, names a backend by the size's parity, and records what it saw.

    Sizes with a meaning: 500 -> HTTP 500; 999 -> never answers in time (sleeps 5 s);
    /chunked streams its body in chunks."""

    sleep_s: float = 0.0
    url: str = ""
    seen: list[tuple[float, int, str]] = field(default_factory=list)  # (arrival, size query, class header)
    active: int = 0
    peak_active: int = 0

    async def work(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query["size"])
        self.seen.append((time.perf_counter(), size, request.headers.get("X-Presage-Class", "")))
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        try:
            await asyncio.sleep(5.0 if size == 999 else self.sleep_s)
        finally:
            self.active -= 1
        headers = {"X-Presage-Backend": "even" if size % 2 == 0 else "odd"}
        if request.path == "/chunked":
            response = web.StreamResponse(headers=headers)
            response.enable_chunked_encoding()
            await response.prepare(request)
            for part in (b"abc", b"de" * 500, b"f"):
                await response.write(part)
            await response.write_eof()
            return response
        return web.Response(status=500 if size == 500 else 200, body=b"x" * size, headers=headers)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()
    app = web.Application()
    app.router.add_get("/work", state.work)
    app.router.add_get("/chunked", state.work)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


async def test_sends_keep_to_the_schedule_when_the_server_is_slow(server: Server) -> None:
    # 200 ms answers at 100 req/s need ~20 requests out at once. A client that waited for answers
    # on its 2 connections could send only 10 req/s and would fall seconds behind.
    server.sleep_s = 0.2
    arrivals = poisson_arrivals(ConstantTrace(100.0, 1.5), seed=3)
    sizes = np.arange(1, arrivals.size + 1) * 2  # unique and even: the server's log maps back
    result = await run_open_loop(server.url, arrivals, sizes=sizes, connections=2, duration_s=1.5)

    assert result.ok.all() and not result.dropped.any()
    assert np.all(result.rtt_s >= 0.2)
    assert server.peak_active >= 10
    received = {size: at for at, size, _ in server.seen}
    got = np.array([received[s] for s in sizes.tolist()])
    # Arrival at the server vs schedule: the same spacing, offset by one constant (clock origin),
    # nowhere near the 200 ms that waiting for an answer would add.
    drift = (got - got[0]) - (arrivals - arrivals[0])
    assert np.abs(drift).max() < 0.1
    assert np.nanmax(result.lag_s) < 0.1


async def test_requests_carry_the_size_as_query_and_class_header(server: Server) -> None:
    sizes = np.array([64, 128, 7, 64])
    result = await run_open_loop(server.url, np.array([0.0, 0.01, 0.02, 0.03]), sizes=sizes)
    assert sorted((s, h) for _, s, h in server.seen) == [(7, "7"), (64, "64"), (64, "64"), (128, "128")]
    assert result.backend.tolist() == ["even", "even", "odd", "even"]
    assert result.status.tolist() == [200] * 4


async def test_chunked_responses_are_read_to_their_end(server: Server) -> None:
    result = await run_open_loop(
        server.url, np.linspace(0.0, 0.05, 6), sizes=np.arange(6), path="/chunked", connections=1
    )
    assert result.status.tolist() == [200] * 6
    assert result.backend.tolist() == ["even", "odd"] * 3


async def test_over_max_in_flight_requests_are_dropped_and_counted(server: Server) -> None:
    server.sleep_s = 0.3
    arrivals = np.linspace(0.0, 0.1, 20)  # all due before the first answer
    result = await run_open_loop(server.url, arrivals, sizes=np.full(20, 2), max_in_flight=3)

    assert result.dropped.tolist() == [False] * 3 + [True] * 17
    assert len(server.seen) == 3
    assert np.isnan(result.rtt_s[result.dropped]).all() and (result.status[result.dropped] == 0).all()
    summary = result.summary(slo_p95_s=1.0, window_s=1.0)
    assert (summary["count"], summary["sent"], summary["ok"], summary["dropped"]) == (20, 3, 3, 17)
    assert summary["errors"] == 0


async def test_http_errors_and_timeouts_are_counted(server: Server) -> None:
    sizes = np.array([2, 500, 999, 4])
    result = await run_open_loop(server.url, np.array([0.0, 0.01, 0.02, 0.03]), sizes=sizes, timeout_s=0.5)

    assert result.status.tolist() == [200, 500, 0, 200]
    assert math.isnan(result.rtt_s[2]) and not math.isnan(result.rtt_s[1])
    summary = result.summary(slo_p95_s=1.0)
    assert (summary["ok"], summary["errors"], summary["transport_errors"], summary["dropped"]) == (2, 2, 1, 0)


async def test_a_refused_connection_is_a_transport_error_not_a_hang() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await run_open_loop(f"http://127.0.0.1:{port}", np.array([0.0, 0.01]), sizes=np.array([1, 2]))
    assert result.status.tolist() == [0, 0]
    assert np.isnan(result.rtt_s).all()


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"arrivals": np.array([0.2, 0.1])}, "sorted"),
        ({"sizes": np.array([1])}, "one size per request"),
        ({"timeout_s": 0.0}, "timeout_s"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"url": "ftp://x"}, "url"),
    ],
)
async def test_bad_arguments_fail_naming_the_problem(kwargs: dict[str, object], named: str) -> None:
    call: dict[str, object] = {
        "url": "http://127.0.0.1:9",
        "arrivals": np.array([0.0, 0.1]),
        "sizes": np.ones(2),
    }
    call.update(kwargs)
    with pytest.raises(ValueError, match=named):
        await run_open_loop(**call)  # type: ignore[arg-type]


def constructed(rtt: list[float], status: list[int], backend: list[str], at: list[float]) -> LoadResult:
    n = len(rtt)
    return LoadResult(
        scheduled_s=np.array(at),
        rtt_s=np.array(rtt),
        status=np.array(status, dtype=np.int32),
        backend=np.array(backend, dtype=str),
        dropped=np.zeros(n, dtype=bool),
        lag_s=np.zeros(n),
        sizes=np.ones(n),
        duration_s=30.0,
    )


def test_summary_windows_judge_the_slo_by_their_own_p95() -> None:
    # Three 10-s windows of 20 requests. Nearest-rank p95 of 20 values is the 19th smallest:
    #   window 0: one slow request  -> p95 = 0.1 -> keeps a 0.5 s SLO
    #   window 1: two slow requests -> p95 = 0.9 -> breaks it
    #   window 2: all fast, but two answered 500 -> failures count as infinitely slow -> breaks it
    fast, slow = 0.1, 0.9
    rtt = [fast] * 19 + [slow] + [fast] * 18 + [slow] * 2 + [fast] * 20
    status = [200] * 40 + [200] * 18 + [500] * 2
    backend = ["a"] * 10 + ["b"] * 10 + ["a"] * 20 + ["b"] * 20
    at = np.concatenate([np.linspace(w * 10, w * 10 + 9.9, 20) for w in range(3)]).tolist()
    summary = constructed(rtt, status, backend, at).summary(slo_p95_s=0.5, window_s=10.0)

    assert [w["p95_s"] for w in summary["windows"]] == [fast, slow, None]
    assert [w["breach"] for w in summary["windows"]] == [False, True, True]
    assert summary["slo_breach_share"] == pytest.approx(2 / 3)
    assert [w["share"] for w in summary["windows"]] == [{"a": 0.5, "b": 0.5}, {"a": 1.0}, {"b": 1.0}]
    assert summary["backend_share"] == {"a": 0.5, "b": 0.5}
    assert (summary["count"], summary["ok"], summary["errors"]) == (60, 58, 2)
    assert summary["p50_s"] == fast and summary["p99_s"] == slow
    assert summary["offered_rps"] == pytest.approx(2.0) and summary["achieved_rps"] == pytest.approx(58 / 30)


def test_summary_leaves_empty_windows_out_of_the_breach_share() -> None:
    result = constructed([0.1, 2.0], [200, 200], ["a", "a"], [1.0, 25.0])
    summary = result.summary(slo_p95_s=0.5, window_s=10.0)
    assert [w["count"] for w in summary["windows"]] == [1, 0, 1]
    assert summary["slo_breach_share"] == 0.5
    with pytest.raises(ValueError, match="slo_p95_s"):
        result.summary(slo_p95_s=0.0)


async def test_cli_runs_a_trace_and_writes_the_summary(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    args = ["--trace", "step", "--low", "20", "--high", "60", "--duration", "1", "--seed", "2"]
    args += ["--window", "0.5", "--json", str(out)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtest.loadgen",
        server.url,
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30.0)
    assert proc.returncode == 0, stderr.decode()
    assert b"offered / achieved rps" in stdout
    summary = json.loads(out.read_text())["summary"]
    assert summary["count"] == len(server.seen) > 0
    assert summary["errors"] == 0 and len(summary["windows"]) == 2
    assert summary["backends"] == ["even"]  # every size in the default mix is even
