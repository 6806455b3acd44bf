"""A real ``presage proxy`` process: SIGHUP reload, SIGTERM drain, and ``--workers 2``."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psutil
import pytest

from proxy.config import BackendSpec, build_config

LISTENING = re.compile(rb"listening on [\d.]+:(\d+) \(admin [\d.]+:(\d+)\)")


class ProxyProcess:
    """A ``presage proxy`` subprocess whose stderr is collected as it runs (the pipe never fills)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.log = b""
        self.url = self.admin = ""
        self._drain = asyncio.create_task(self._read_log())

    async def _read_log(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.log += line

    async def started(self) -> None:
        deadline = time.monotonic() + 30
        while (match := LISTENING.search(self.log)) is None:
            assert self.proc.returncode is None and time.monotonic() < deadline, self.log.decode(
                errors="replace"
            )
            await asyncio.sleep(0.05)
        self.url = f"http://127.0.0.1:{int(match.group(1))}"
        self.admin = f"http://127.0.0.1:{int(match.group(2))}"

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def exit_code(self, within_s: float) -> int:
        try:
            return await asyncio.wait_for(self.proc.wait(), within_s)
        except TimeoutError:
            raise AssertionError(
                f"no exit within {within_s}s:\n{self.log.decode(errors='replace')}"
            ) from None

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await self._drain


async def start_proxy(config: Path, *extra: str) -> ProxyProcess:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.main", "-c", str(config), *extra,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    proxy = ProxyProcess(proc)
    try:
        await proxy.started()
    except BaseException:
        await proxy.close()
        raise
    return proxy


@pytest.fixture
async def processes() -> AsyncIterator[list[ProxyProcess]]:
    started: list[ProxyProcess] = []
    yield started
    for p in started:
        await p.close()


def write_config(path: Path, backends: list[tuple[str, str]], **extra: object) -> Path:
    lines = [
        "listen: 127.0.0.1:0",
        "admin: 127.0.0.1:0",
        "policy: round_robin",
        "access_log: {path: null}",
        "health: {enabled: false}",
        "backends:",
        *(f"  - {{id: {ident}, url: '{url}'}}" for ident, url in backends),
        *(f"{key}: {value}" for key, value in extra.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def metric(client: aiohttp.ClientSession, admin: str, name: str) -> float:
    async with client.get(f"{admin}/metrics") as resp:
        text = await resp.text()
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def eventually(check, within_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_sighup_swaps_the_config_and_keeps_it_on_error(backends, client, processes, tmp_path) -> None:
    b1, b2 = await backends(2)
    config = write_config(tmp_path / "presage.yaml", [("one", b1.url)])
    proxy = await start_proxy(config)
    processes.append(proxy)
    async with client.get(f"{proxy.url}/headers") as resp:
        assert resp.headers["X-Backend"] == "b1"

    write_config(config, [("two", b2.url)])
    proxy.signal(signal.SIGHUP)

    async def on_b2() -> bool:
        async with client.get(f"{proxy.url}/headers") as resp:
            return resp.headers["X-Backend"] == "b2"

    await eventually(on_b2)
    ok = 'presage_config_reloads_total{result="success"}'
    assert await metric(client, proxy.admin, ok) == 1

    config.write_text(config.read_text() + "health: {intervl_s: 1}\n")
    proxy.signal(signal.SIGHUP)
    failed = 'presage_config_reloads_total{result="error"}'

    async def counted() -> bool:
        return await metric(client, proxy.admin, failed) == 1

    await eventually(counted)
    for _ in range(3):  # the running config is untouched
        async with client.get(f"{proxy.url}/headers") as resp:
            assert resp.headers["X-Backend"] == "b2"
    proxy.signal(signal.SIGTERM)
    assert await proxy.exit_code(10) == 0


async def test_sigterm_drains_then_exits_0(backends, client, processes, tmp_path) -> None:
    (b1,) = await backends(1)
    config = write_config(tmp_path / "presage.yaml", [("one", b1.url)], drain_delay_s=0.6, grace_s=5)
    proxy = await start_proxy(config)
    processes.append(proxy)

    async def slow() -> int:
        async with client.get(f"{proxy.url}/slow?delay=1.2") as resp:
            await resp.read()
            return resp.status

    in_flight = asyncio.create_task(slow())
    await asyncio.sleep(0.2)
    proxy.signal(signal.SIGTERM)
    await asyncio.sleep(0.2)
    async with client.get(f"{proxy.admin}/readyz") as resp:
        assert resp.status == 503  # draining: load balancers stop sending
    assert await in_flight == 200  # the request in flight finished
    assert await proxy.exit_code(10) == 0
    with pytest.raises(aiohttp.ClientConnectionError):
        async with client.get(f"{proxy.url}/headers"):
            pass


async def test_two_workers_share_the_port_and_the_metrics(backends, processes, tmp_path) -> None:
    (b1,) = await backends(1)
    config = write_config(tmp_path / "presage.yaml", [("one", b1.url)], drain_delay_s=0)
    proxy = await start_proxy(config, "--workers", "2")
    processes.append(proxy)
    parent = psutil.Process(proxy.proc.pid)
    await eventually(lambda: _ready(parent, 2))
    workers = parent.children()
    found = re.search(rb"metrics in ([^)\s]+)", proxy.log)
    assert found, proxy.log
    metrics_dir = found.group(1).decode()
    assert await asyncio.to_thread(os.path.isdir, metrics_dir)

    pids = set()
    for _ in range(40):  # a new connection each time, so SO_REUSEPORT spreads them
        async with aiohttp.ClientSession() as fresh:
            async with fresh.get(f"{proxy.url}/headers") as resp:
                assert resp.status == 200
            async with fresh.get(f"{proxy.admin}/v1/backends") as resp:
                pids.add((await resp.json())["worker_pid"])
    assert pids == {w.pid for w in workers}

    async with aiohttp.ClientSession() as client:
        total = 'presage_requests_total{backend="one",code="200",protocol="http1"}'

        async def all_counted() -> bool:  # every worker's count, from any worker (flushed at 1 Hz)
            return await metric(client, proxy.admin, total) == 40

        await eventually(all_counted)
        proxy.signal(signal.SIGHUP)  # forwarded to both workers
        reloads = 'presage_config_reloads_total{result="success"}'

        async def both_reloaded() -> bool:
            return await metric(client, proxy.admin, reloads) == 2

        await eventually(both_reloaded)

    workers[0].kill()  # a crashed worker is replaced by the supervisor

    async def replaced() -> bool:
        pids_now = {c.pid for c in parent.children()}
        return len(pids_now) == 2 and workers[0].pid not in pids_now

    await eventually(replaced)
    proxy.signal(signal.SIGTERM)
    assert await proxy.exit_code(15) == 0
    assert not await asyncio.to_thread(os.path.exists, metrics_dir)


async def _ready(parent: psutil.Process, n: int) -> bool:
    return len(parent.children()) == n


async def test_reload_keeps_endpoint_state_and_refuses_a_bad_config(backends, proxy, client) -> None:
    b1, b2 = await backends(2)
    running = await proxy([b1.url], policy="round_robin")
    worker = running.worker
    async with client.get(f"{running.url}/headers") as resp:
        assert resp.status == 200
    kept = worker.state.pool.endpoints[0]
    estimate = kept.ewma_cost(worker.clock())

    new = dataclasses.replace(
        worker.config,
        policy="peak_ewma",
        explain_header=True,
        backends=(*worker.config.backends, BackendSpec("b2", b2.url)),
    )
    await worker.apply(new)
    assert worker.state.pool.endpoints[0] is kept  # same object: in-flight and peak-EWMA survive
    assert kept.ewma_cost(worker.clock()) <= estimate and kept.has_data
    async with client.get(f"{running.url}/headers") as resp:
        assert resp.headers["x-presage-policy"] == "peak_ewma"

    worker.reload_config = lambda: build_config({"backends": [{"id": "x", "url": "nope"}]})
    assert await worker.reload() is False
    assert [ep.id for ep in worker.state.pool.endpoints] == ["b1", "b2"]
