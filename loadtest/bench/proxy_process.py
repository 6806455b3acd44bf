"""A ``presage proxy`` child process for one bench run: start, wait until ready, scrape, stop.

The proxy runs exactly as a user runs it (``python -m proxy.cli proxy ...``), one worker, access log
off (as for HAProxy and NGINX), its stderr kept in a log file next to the results so that a failed
start can be diagnosed. ``stop`` sends SIGTERM with no drain delay and a short grace, then kills
after a bound: the bench never waits on a stuck child.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class ProxyStartError(RuntimeError):
    """The proxy exited or did not become ready; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ProxyProcess:
    def __init__(
        self,
        backends: Sequence[tuple[str, str]],
        policy: str,
        *,
        log_path: Path,
        redis_url: str | None = None,
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.command = [
            sys.executable, "-m", "proxy.cli", "proxy",
            "--listen", f"127.0.0.1:{self.port}", "--admin", f"127.0.0.1:{self.admin_port}",
            "--policy", policy, "--access-log", "off", "--drain-delay-s", "0", "--grace-s", "2",
        ]  # fmt: skip
        for backend_id, url in backends:
            self.command += ["--backend", f"{backend_id}={url}"]
        if redis_url:
            self.command += ["--redis", redis_url]
        self.command += list(extra)
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(("$ " + " ".join(self.command) + "\n").encode())
            log.flush()
            self.process = await asyncio.create_subprocess_exec(
                *self.command, stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL, env=self.env
            )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise ProxyStartError(
                        f"presage proxy exited with {self.process.returncode}: {self.tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(self.admin_url + "/readyz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        await self.stop()
        raise ProxyStartError(f"presage proxy not ready after {START_TIMEOUT_S:.0f}s: {self.tail()}")

    async def scrape(self) -> str | None:
        """The admin ``/metrics`` text, or ``None`` when it cannot be read."""
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0)) as session,
                session.get(self.admin_url + "/metrics") as resp,
            ):
                if resp.status == 200:
                    return await resp.text()
        return None

    async def model_figures(self) -> dict[str, Any]:
        """From ``predicted``'s admin ``/v1/model``: its count of OOD fallbacks by the input out of
        range (``ood_features``) and how many decisions a prediction table answered without
        scoring (``table_hits``; None when the page has no such count)."""
        out: dict[str, Any] = {"ood_features": {}, "table_hits": None}
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0)) as session,
                session.get(self.admin_url + "/v1/model") as resp,
            ):
                if resp.status == 200:
                    doc = await resp.json()
                    found = _find_key(doc, "ood_features")
                    if isinstance(found, dict):
                        out["ood_features"] = {str(k): int(v) for k, v in found.items()}
                    hits = _find_key(doc, "table_hits")
                    if isinstance(hits, int):
                        out["table_hits"] = hits
        return out

    async def stop(self) -> None:
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return "(no log)"

    async def __aenter__(self) -> ProxyProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _find_key(doc: object, key: str) -> object:
    """The first value under ``key`` anywhere in a JSON document (its nesting is the proxy's business)."""
    if isinstance(doc, dict):
        if key in doc:
            return doc[key]
        values = list(doc.values())
    elif isinstance(doc, list):
        values = doc
    else:
        return None
    for value in values:
        found = _find_key(value, key)
        if found is not None:
            return found
    return None
