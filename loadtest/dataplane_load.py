"""A small HTTP/1.1 keep-alive load generator and a tiny aiohttp backend, for the data-plane bench.

The generator is raw asyncio protocols on uvloop: no HTTP client library in the measured path, so
on a 2-core machine it takes as little CPU as possible away from the system under test.

* closed loop (``--mode closed``): ``C`` connections each send the next request as soon as the
  previous response is complete; the result is the maximum sustained requests/s.
* open loop (``--mode open --rate R``): requests are due at fixed intervals ``1/R`` regardless of
  responses; a due request waits for an idle connection if all are busy. A request that had to
  wait is timed from its *due* time, not its send time, so a stall is charged to every request
  it delayed (coordinated omission, Tene's wrk2); one sent at once is timed from its send, so the
  generator's 1 ms timer tick is not counted against the server.

Each run prints one JSON object: requests, errors, elapsed, rps and latency percentiles (ms).
``python -m loadtest.dataplane_load backend --port P`` serves the bench backend.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import math
import sys
import time
import typing
from collections.abc import Callable, Sequence
from typing import Any

import orjson

WARMUP_S = 0.5


def _install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()


def _content_length(head: bytes) -> int:
    at = head.find(b"content-length:")
    if at < 0:
        return 0
    end = head.find(b"\r\n", at)
    return int(head[at + 15 : end if end >= 0 else len(head)])


class _Conn(asyncio.Protocol):
    """One keep-alive connection; parses responses by ``Content-Length`` (the bench never chunks)."""

    def __init__(self, request: bytes, done: Callable[[_Conn, bool], None]) -> None:
        self.request = request
        self.done = done
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.need = -1
        self.sent_at = 0.0
        self.due_at = 0.0
        self.lost = False
        self.ok = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def send(self, due_at: float) -> None:
        assert self.transport is not None
        self.due_at = due_at
        self.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buf[:end]).lower()
                self.ok = head[9:10] == b"2"
                self.need = end + 4 + _content_length(head)
            if len(self.buf) < self.need:
                return
            del self.buf[: self.need]
            self.need = -1
            self.done(self, self.ok)


class LoadRun:
    def __init__(self, targets: Sequence[tuple[str, int]], path: str, connections: int) -> None:
        host = targets[0][0]
        self.request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: presage-bench\r\n\r\n".encode()
        self.targets = list(targets)
        self.connections = connections
        self.conns: list[_Conn] = []
        self.latencies: list[float] = []
        self.errors = 0
        self.count = 0
        self.measure_from = math.inf
        self.stop_at = math.inf

    async def connect(self, on_done: Callable[[_Conn, bool], None]) -> None:
        loop = asyncio.get_running_loop()
        for i in range(self.connections):
            host, port = self.targets[i % len(self.targets)]
            _, proto = await loop.create_connection(lambda: _Conn(self.request, on_done), host, port)
            self.conns.append(proto)

    def record(self, conn: _Conn, ok: bool, now: float) -> None:
        if conn.due_at >= self.measure_from:
            self.count += 1
            self.latencies.append(now - conn.due_at)
            if not ok:
                self.errors += 1

    def close(self) -> None:
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.close()

    def result(self, elapsed: float) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000.0 if lat else float("nan")

        return {
            "requests": self.count,
            "errors": self.errors,
            "elapsed_s": elapsed,
            "rps": self.count / elapsed if elapsed > 0 else 0.0,
            "p50_ms": pct(0.50),
            "p90_ms": pct(0.90),
            "p99_ms": pct(0.99),
            "max_ms": lat[-1] * 1000.0 if lat else float("nan"),
        }


async def closed_loop(run: LoadRun, duration_s: float) -> dict[str, Any]:
    finished = asyncio.get_running_loop().create_future()

    def on_done(conn: _Conn, ok: bool) -> None:
        now = time.perf_counter()
        run.record(conn, ok, now)
        if now < run.stop_at:
            conn.send(now)
        elif all(c.need < 0 for c in run.conns) and not finished.done():
            finished.set_result(None)

    await run.connect(on_done)
    start = time.perf_counter()
    run.measure_from = start + WARMUP_S
    run.stop_at = run.measure_from + duration_s
    for conn in run.conns:
        conn.send(start)
    await asyncio.wait_for(finished, duration_s + WARMUP_S + 30.0)
    return run.result(duration_s)


async def open_loop(run: LoadRun, duration_s: float, rate: float) -> dict[str, Any]:
    idle: collections.deque[_Conn] = collections.deque()
    waiting: collections.deque[float] = collections.deque()
    drained = asyncio.Event()

    def on_done(conn: _Conn, ok: bool) -> None:
        run.record(conn, ok, time.perf_counter())
        if waiting:
            conn.send(waiting.popleft())
            return
        idle.append(conn)
        if len(idle) == len(run.conns):
            drained.set()

    await run.connect(on_done)
    idle.extend(run.conns)
    start = time.perf_counter()
    run.measure_from = start + WARMUP_S
    end = run.measure_from + duration_s
    interval = 1.0 / rate
    issued = 0
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        due_count = int((now - start) / interval) + 1
        while issued < due_count:
            due = start + issued * interval
            issued += 1
            if idle:  # sent now: the timer tick's own lateness (up to ~1 ms) is not the server's
                idle.popleft().send(max(due, time.perf_counter()))
            else:  # every connection busy: the wait is the server's, counted from the due time
                waiting.append(due)
        await asyncio.sleep(min(interval, 0.001))
    if waiting or len(idle) < len(run.conns):
        drained.clear()
        await asyncio.wait_for(drained.wait(), 30.0)
    return run.result(duration_s)


async def _load(args: argparse.Namespace) -> dict[str, Any]:
    targets = [_host_port(t) for t in args.target.split(",")]
    run = LoadRun(targets, args.path, args.connections)
    try:
        if args.mode == "closed":
            return await closed_loop(run, args.duration)
        return await open_loop(run, args.duration, args.rate)
    finally:
        run.close()


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


async def _serve_backend(host: str, port: int) -> None:
    from aiohttp import web

    body = b"ok"

    async def handler(request: web.BaseRequest) -> web.Response:
        return web.Response(body=body)

    runner = web.ServerRunner(web.Server(handler, access_log=None))
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    print(f"listening {host}:{site.port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.dataplane_load")
    sub = parser.add_subparsers(dest="cmd", required=True)
    load = sub.add_parser("load", help="run one load phase and print JSON")
    load.add_argument("--target", required=True, help="HOST:PORT[,HOST:PORT...] (connections spread)")
    load.add_argument("--path", default="/")
    load.add_argument("--mode", choices=("closed", "open"), default="closed")
    load.add_argument("--connections", type=int, default=32)
    load.add_argument("--duration", type=float, default=4.0)
    load.add_argument("--rate", type=float, default=1000.0)
    backend = sub.add_parser("backend", help="serve the tiny bench backend")
    backend.add_argument("--host", default="127.0.0.1")
    backend.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    _install_uvloop()
    if args.cmd == "backend":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve_backend(args.host, args.port))
        return 0
    result = asyncio.run(_load(args))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
