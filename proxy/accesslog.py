"""JSON-lines access log (orjson), buffered off the request path.

One line per logged request::

    {"time": 1700000000.123, "method": "GET", "path": "/x?y=1", "status": 200,
     "duration_s": 0.0012, "backend": "b1", "upstream_status": 200, "upstream_duration_s": 0.0009,
     "bytes_in": 0, "bytes_out": 512, "request_id": "...", "reason": null, "attempts": 1}

``reason`` carries the error token (the ``x-presage-reason`` value) or ``null``. With
``sample < 1`` only that share of successful requests is written; every error is written. The
request path appends encoded bytes to a list; a background task swaps the list out and writes it
from a worker thread every ``flush_interval_s`` (or sooner when 256 KiB are pending), so the event
loop never blocks on the disk or a slow stdout pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
from typing import IO, Any

import orjson

from .tasks import cancel_and_wait

log = logging.getLogger("presage.accesslog")

FLUSH_BYTES = 256 * 1024


class AccessLog:
    def __init__(
        self,
        path: str | None,
        sample: float = 1.0,
        *,
        rng: random.Random | None = None,
        flush_interval_s: float = 0.2,
    ) -> None:
        self.path = path
        self.sample = sample
        self.enabled = path is not None
        self._rng = rng or random.Random()
        self._flush_interval_s = flush_interval_s
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._fh: IO[bytes] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.written = 0

    def wanted(self, failed: bool) -> bool:
        """Whether to log this request; sampling only thins out successes."""
        return self.enabled and (failed or self.sample >= 1.0 or self._rng.random() < self.sample)

    def write(self, record: dict[str, Any]) -> None:
        line = orjson.dumps(record) + b"\n"
        self._pending.append(line)
        self._pending_bytes += len(line)
        if self._pending_bytes >= FLUSH_BYTES:
            self._wake.set()

    async def start(self) -> None:
        if not self.enabled:
            return
        if self.path == "-":
            self._fh = sys.stdout.buffer
        else:
            assert self.path is not None
            self._fh = await asyncio.to_thread(open, self.path, "ab")
        self._task = asyncio.create_task(self._run(), name="presage-accesslog")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._fh is None:
            return
        self._flush_now(self._take())
        if self._fh is not sys.stdout.buffer:
            self._fh.close()
        self._fh = None

    def _take(self) -> list[bytes]:
        lines, self._pending, self._pending_bytes = self._pending, [], 0
        return lines

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_interval_s)
            self._wake.clear()
            lines = self._take()
            if lines:
                await asyncio.to_thread(self._flush_now, lines)

    def _flush_now(self, lines: list[bytes]) -> None:
        if not lines or self._fh is None:
            return
        try:
            self._fh.write(b"".join(lines))
            self._fh.flush()
            self.written += len(lines)
        except (OSError, ValueError) as exc:  # a closed pipe must not take the worker down
            log.warning("access log write failed: %s", exc)
