"""Training-sample recording (``--record FILE`` and/or a capped Redis stream).

For a sampled fraction of requests the proxy keeps what it knew at dispatch — every candidate's
feature vector *as seen then* (a reference to the immutable snapshot and a row index: no copy in
the request path), the proxy-local signals, the request's features, the chosen backend and whether
the choice was exploration — and, at completion, the observed RTT and status.

The request path only appends a small tuple to a bounded deque (dropped and counted when full);
a background task turns pending records into JSON lines (``predictor_runtime.samples`` format) and
writes them from a worker thread, so neither disk nor Redis is touched by a request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from predictor_runtime import samples

from .tasks import cancel_and_wait

log = logging.getLogger("presage.recorder")


@dataclass(slots=True)
class PendingSample:
    ts: float
    id: str
    method: str
    req_bytes: int
    req_class: float
    policy: str
    explore: bool
    chosen: str
    snap: Any  # FeatureSnapshot or None
    backends: tuple[str, ...]
    local: tuple[tuple[float, float, float], ...]
    rtt_s: float = 0.0
    status: int = 0


def local_signals(in_flight: int, ewma_s: float, feature_age_s: float) -> tuple[float, float, float]:
    """``samples.LOCAL_FEATURES`` in order; the assembler fills the same three columns."""
    return (float(in_flight), float(ewma_s), float(feature_age_s))


class SampleRecorder:
    def __init__(
        self,
        *,
        path: str | None,
        feature_names: Sequence[str] = (),
        fraction: float = 1.0,
        redis: Any = None,
        stream_key: str | None = None,
        stream_maxlen: int = 200_000,
        max_pending: int = 50_000,
        flush_interval_s: float = 0.25,
    ) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("record_fraction must be between 0 and 1")
        self.path = path
        self.feature_names = tuple(feature_names)
        self.fraction = fraction
        self.redis = redis
        self.stream_key = stream_key
        self.stream_maxlen = stream_maxlen
        self.flush_interval_s = flush_interval_s
        self._done: deque[PendingSample] = deque(maxlen=max_pending)
        self.recorded = 0
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None
        self._fh: Any = None
        self._header_written = False

    def wants(self, u: float) -> bool:
        """``u`` is a uniform draw from the caller's seeded RNG."""
        return u < self.fraction

    def complete(self, pending: PendingSample, rtt_s: float, status: int) -> None:
        """Hot path: O(1), no I/O."""
        pending.rtt_s = rtt_s
        pending.status = status
        if len(self._done) == self._done.maxlen:
            self.dropped += 1
        self._done.append(pending)

    # -- background ------------------------------------------------------------------------------
    def _render(self, batch: list[PendingSample]) -> tuple[bytes, bool]:
        """JSON lines for ``batch``; a header line goes first whenever the agents' feature names
        change (the first snapshot, or agents restarted with other windows). Returns the bytes and
        whether they open with a new header."""
        lines = []
        new_header = False
        for p in batch:
            names = tuple(p.snap.names) if p.snap is not None else self.feature_names
            if names != self.feature_names or not self._header_written:
                self.feature_names = names
                self._header_written = True
                new_header = True
                lines.append(samples.dumps(samples.header_record(names)))
            cands = []
            for bid, loc in zip(p.backends, p.local, strict=True):
                cands.append(samples.Candidate(bid, self._row(p.snap, bid), loc))
            sample = samples.Sample(
                ts=p.ts,
                id=p.id,
                method=p.method,
                req_bytes=p.req_bytes,
                req_class=p.req_class,
                policy=p.policy,
                explore=p.explore,
                chosen=p.chosen,
                rtt_s=p.rtt_s,
                status=p.status,
                candidates=tuple(cands),
                feature_names=self.feature_names,
                local_names=samples.LOCAL_FEATURES,
            )
            lines.append(samples.dumps(samples.sample_record(sample)))
        return b"".join(lines), new_header

    @staticmethod
    def _row(snap: Any, bid: str) -> tuple[float, ...] | None:
        if snap is None:
            return None
        row = snap.row(bid)  # None when the proxy had no vector for this backend
        if row is None:
            return None
        return tuple(np.asarray(row, dtype=np.float64).tolist())

    def _open(self) -> None:
        # Appending: each writer start puts its own header before its first sample (the reader
        # re-reads the names at every header), so restarts and several workers can share a file.
        if self.path is not None and self._fh is None:
            self._fh = open(self.path, "ab")  # noqa: SIM115 - closed in stop()

    def _write_file(self, data: bytes) -> None:
        self._open()
        self._fh.write(data)
        self._fh.flush()

    async def flush(self) -> int:
        if not self._done:
            return 0
        batch = list(self._done)
        self._done.clear()
        data, new_header = self._render(batch)
        if self.path is not None:
            await asyncio.to_thread(self._write_file, data)
        if self.redis is not None and self.stream_key:
            await self._write_stream(data, new_header)
        self.recorded += len(batch)
        return len(batch)

    async def _write_stream(self, data: bytes, new_header: bool) -> None:
        # Stream entries are sample lines; the (latest) header lives beside the stream.
        try:
            pipe = self.redis.pipeline(transaction=False)
            for line in data.splitlines():
                if line.startswith(b'{"type":"header"'):
                    if new_header:
                        pipe.set(f"{self.stream_key}:header", line + b"\n")
                    continue
                pipe.xadd(self.stream_key, {"s": line}, maxlen=self.stream_maxlen, approximate=True)
            await pipe.execute()
        except Exception as exc:  # Redis down: the file (if any) still has them; count and go on
            log.warning("sample stream write failed: %s", exc)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
            except OSError as exc:
                log.error("sample file write failed: %s", exc)

    async def start(self) -> None:
        if self.path is not None:
            await asyncio.to_thread(self._open)
        self._task = asyncio.create_task(self._run(), name="presage-recorder")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self.flush()
        if self._fh is not None:
            self._fh.close()
            self._fh = None
