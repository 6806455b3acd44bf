"""Waiting for the testbed's backends to go idle between two runs.

Runs are compared on the same arrivals, so each must start from the same state: empty backend
queues. When a policy overloads a weak backend, that backend may still be working through its
queue when the run's last answer is in (requests the proxy gave up on keep running in the
backend's worker pool), and the next contender would start behind that backlog. Each backend
reports ``presage_backend_in_flight`` (queued or running) on ``/metrics``; this polls every
backend until all report zero, bounded by a timeout, and says how long that took and what was left.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import aiohttp

from metrics_agent.scrape import parse_text

GAUGE = "presage_backend_in_flight"


def in_flight(text: str) -> float | None:
    """The in-flight gauge from a Prometheus text page (``None`` when absent), read by the agent's
    own scrape parser (``metrics_agent.scrape.parse_text``: labels, comments, malformed lines)."""
    return parse_text(text, {GAUGE: GAUGE}).get(GAUGE)


async def wait_idle(
    backends: Sequence[tuple[str, str]],
    *,
    timeout_s: float = 30.0,
    poll_s: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, object]:
    """Poll ``(id, base_url)`` backends until every one reports nothing in flight, or ``timeout_s``.

    Returns ``{"waited_s", "idle": bool, "busy_at_start": {id: n}, "busy_at_end": {id: n}}``; a
    backend that cannot be read counts as idle (a dead backend has no queue to wait for).
    """
    started = clock()
    first: dict[str, float] = {}
    busy: dict[str, float] = {}
    timeout = aiohttp.ClientTimeout(total=2.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            busy = {}
            for bid, url in backends:
                n = await _read(session, url.rstrip("/") + "/metrics")
                if n:
                    busy[bid] = n
            if not first:
                first = dict(busy) or {"": 0.0}
            if not busy or clock() - started >= timeout_s:
                break
            await asyncio.sleep(poll_s)
    first.pop("", None)
    return {"waited_s": clock() - started, "idle": not busy, "busy_at_start": first, "busy_at_end": busy}


async def _read(session: aiohttp.ClientSession, url: str) -> float | None:
    try:
        async with session.get(url) as resp:
            if resp.status != 200:
                return None
            return in_flight(await resp.text())
    except (TimeoutError, aiohttp.ClientError, OSError):
        return None
