"""`presage backend`: one testbed backend doing real numpy work per request, behind a bounded pool.

Routes
  ``GET|POST /work?size=N``  filter an N x N micrograph movie (``imaging.filter_movie``; with
      ``--work checksum``, hash an object's block sized by N instead: ``checksum``). The size
      is the image side in pixels, ``imaging.MIN_SIDE``..``MAX_SIDE``. Without ``size`` the header
      ``X-Presage-Class`` is read with the same meaning (the side in pixels, so the proxy's
      ``--class-from header:X-Presage-Class`` or ``query:size`` gives the model a numeric class that
      orders requests by work); with neither, ``DEFAULT_SIDE``. A bad value answers 400 with the
      reason. A POST body is read and discarded.
  ``GET /healthz``  200 ``{"id", "workers", "work_mult", "work"}``.
  ``GET /metrics``  Prometheus text: gauges ``presage_backend_in_flight`` (requests inside the
      backend: queued or running), ``presage_backend_queue_length`` (waiting for a worker),
      ``presage_backend_workers``; counters ``presage_backend_served_total``,
      ``presage_backend_rejected_total`` (queue full, 503) and ``presage_backend_busy_seconds_total``
      (worker wall time).

Every response carries ``X-Presage-Backend: ID``. The pool is ``--workers`` threads; an asyncio
semaphore admits at most that many requests into it, so the others wait in a FIFO queue whose length
is exported (an M/G/c queue with c = workers, and the CPU quota of the cgroup the process runs in
decides how fast those c servers go). ``--delay-ms`` adds a fixed non-CPU delay before the answer,
standing in for a longer network path where netem is not available.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
from aiohttp import web

from loadtest.testbed import imaging, work

CLASS_HEADER = "X-Presage-Class"
BACKEND_HEADER = "X-Presage-Backend"
DEFAULT_MAX_QUEUE = 1024


class BadSize(ValueError):
    """A request whose size cannot be served; the message is the 400 body."""


def parse_side(query_value: str | None, header_value: str | None) -> int:
    """The image side from ``size`` (preferred) or the class header; DEFAULT_SIDE when neither."""
    key, raw = ("size", query_value) if query_value is not None else (CLASS_HEADER, header_value)
    if raw is None or raw == "":
        return imaging.DEFAULT_SIDE
    try:
        value = float(raw)
    except ValueError:
        raise BadSize(f"{key}: not a number ({raw[:40]!r})") from None
    if not value.is_integer():
        raise BadSize(f"{key}: the image side must be a whole number of pixels (got {raw[:40]!r})")
    try:
        return imaging.check_side(int(value))
    except ValueError as exc:
        raise BadSize(f"{key}: {exc}") from None


class Backend:
    """State of one backend: the pool, the admission semaphore and the exported counters."""

    def __init__(
        self, backend_id: str, workers: int, work_mult: float, delay_ms: float, max_queue: int,
        work_kind: str = work.DEFAULT_KIND,
    ) -> None:  # fmt: skip
        self.id = backend_id
        self.work_kind = work_kind
        self.run = work.kind(work_kind).run
        self.workers = workers
        self.work_mult = work_mult
        self.frames = imaging.frames_for(work_mult)
        self.delay_s = delay_ms / 1000.0
        self.max_queue = max_queue
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"work-{backend_id}")
        self.slots = asyncio.Semaphore(workers)
        self.in_flight = 0
        self.queued = 0
        self.served = 0
        self.rejected = 0
        self.busy_s = 0.0
        self._seq = itertools.count()
        self.headers = {BACKEND_HEADER: backend_id}

    async def work(self, request: web.Request) -> web.Response:
        try:
            side = parse_side(request.query.get("size"), request.headers.get(CLASS_HEADER))
        except BadSize as exc:
            return web.Response(status=400, text=f"{exc}\n", headers=self.headers)
        if request.can_read_body:
            await request.read()
        if self.queued >= self.max_queue:
            self.rejected += 1
            return web.Response(status=503, text="queue full\n", headers={**self.headers, "Retry-After": "1"})
        arrived = time.perf_counter()
        self.in_flight += 1
        self.queued += 1
        waiting = True
        try:
            await self.slots.acquire()
            self.queued -= 1
            waiting = False
            try:
                started = time.perf_counter()
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self.pool, self.run, side, self.frames, next(self._seq))
                done = time.perf_counter()
            finally:
                self.slots.release()
            if self.delay_s > 0:
                await asyncio.sleep(self.delay_s)
        finally:  # a cancelled waiter must leave the queue count too
            if waiting:
                self.queued -= 1
            self.in_flight -= 1
        self.served += 1
        self.busy_s += done - started
        body = {
            "backend": self.id,
            "size": side,
            "frames": result.frames,
            "picks": result.picks,
            "queue_s": started - arrived,
            "service_s": done - started,
            "cpu_s": result.cpu_s,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json", headers=self.headers)

    async def healthz(self, request: web.Request) -> web.Response:
        body = {"id": self.id, "workers": self.workers, "work_mult": self.work_mult, "work": self.work_kind}
        return web.Response(body=orjson.dumps(body), content_type="application/json", headers=self.headers)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.exposition(), content_type="text/plain", headers=self.headers)

    def exposition(self) -> str:
        """Prometheus text format 0.0.4, written out: five series need no client library."""
        rows = (
            ("presage_backend_in_flight", "gauge", "Requests inside the backend, queued or running.",
             self.in_flight),
            ("presage_backend_queue_length", "gauge", "Requests waiting for a worker.", self.queued),
            ("presage_backend_workers", "gauge", "Size of the worker pool.", self.workers),
            ("presage_backend_served_total", "counter", "Requests answered 200.", self.served),
            ("presage_backend_rejected_total", "counter", "Requests refused with 503 (queue full).",
             self.rejected),
            ("presage_backend_busy_seconds_total", "counter", "Worker wall time spent on requests.",
             self.busy_s),
        )
        lines = []
        for name, kind, help_, value in rows:
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {float(value)!r}"]
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def make_app(backend: Backend) -> web.Application:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("GET", "/work", backend.work)
    app.router.add_route("POST", "/work", backend.work)
    app.router.add_get("/healthz", backend.healthz)
    app.router.add_get("/metrics", backend.metrics)
    return app


async def serve(args: argparse.Namespace) -> None:
    backend = Backend(args.id, args.workers, args.work_mult, args.delay_ms, args.max_queue, args.work)
    for side in args.warm:
        work.kind(args.work).prepare(side)
    runner = web.AppRunner(make_app(backend), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, args.host, args.port, backlog=1024)
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://{args.host}:{port}"
        if args.ready_file is not None:  # written whole then renamed, so a reader never sees half a URL
            tmp = args.ready_file.with_suffix(".tmp")
            tmp.write_text(url + "\n")
            tmp.replace(args.ready_file)
        print(f"presage backend {args.id} on {url} workers={args.workers} frames={backend.frames}",
              flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
        backend.close()


def _positive_int(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"must be 1..256 (got {value})")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535 (got {value})")
    return value


def _queue_limit(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"must be 1..1000000 (got {value})")
    return value


def _nonneg_float(text: str) -> float:
    value = float(text)
    if not (value >= 0 and value < 1e6):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0 (got {text})")
    return value


def _side(text: str) -> int:
    try:
        return imaging.check_side(int(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="presage backend", description=__doc__.split("\n")[0])
    p.add_argument("--id", required=True, help="backend id, sent back in X-Presage-Backend")
    p.add_argument("--port", type=_port, required=True, help="TCP port (0: any free port)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--workers", type=_positive_int, default=2, help="worker threads (default 2)")
    p.add_argument("--work-mult", type=_nonneg_float, default=1.0, help="work per request multiplier")
    p.add_argument("--delay-ms", type=_nonneg_float, default=0.0, help="fixed extra delay per answer")
    p.add_argument("--work", choices=sorted(work.KINDS), default=work.DEFAULT_KIND,
                   help=f"what a request does (default {work.DEFAULT_KIND}; loadtest.testbed.work)")
    p.add_argument("--max-queue", type=_queue_limit, default=DEFAULT_MAX_QUEUE, help="503 beyond this")
    p.add_argument("--warm", type=_side, nargs="*", default=[128, 256, 512], help="sides to pre-build")
    p.add_argument("--ready-file", type=Path, help="write the URL here once listening")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.work_mult <= 0:
        print("presage backend: --work-mult must be > 0", file=sys.stderr)
        return 2
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    try:
        asyncio.run(serve(args))
    except OSError as exc:  # the port is taken, the host is not ours: say so, no traceback
        print(f"presage backend {args.id}: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
