"""The testbed backend: real FFT work per request behind a bounded pool, so queues form and show."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from loadtest.testbed import checksum, imaging, work
from loadtest.testbed.backend import BACKEND_HEADER, CLASS_HEADER, Backend, main, make_app, parse_side


@pytest.fixture
async def one_worker() -> AsyncIterator[tuple[str, Backend]]:
    """A backend with one worker thread on 127.0.0.1, served in this process."""
    backend = Backend("t1", workers=1, work_mult=1.0, delay_ms=0.0, max_queue=64)
    runner = web.AppRunner(make_app(backend), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", backend
    finally:
        await runner.cleanup()
        backend.close()


def scrape(text: str) -> dict[str, float]:
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples}


async def test_a_saturating_burst_queues_and_later_requests_wait_longer(
    one_worker: tuple[str, Backend],
) -> None:
    url, _ = one_worker
    n = 10
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> dict[str, float]:
            async with session.get(f"{url}/work", params={"size": "256"}) as resp:
                assert resp.status == 200
                assert resp.headers[BACKEND_HEADER] == "t1"
                return await resp.json()

        burst = [asyncio.create_task(one(i)) for i in range(n)]
        seen_queue = 0.0
        for _ in range(200):  # bounded: the burst lasts n x ~6 ms of work
            async with session.get(f"{url}/metrics") as resp:
                metrics = scrape(await resp.text())
            seen_queue = max(seen_queue, metrics["presage_backend_queue_length"])
            if seen_queue > 0 or all(t.done() for t in burst):
                break
            await asyncio.sleep(0.002)
        answers = await asyncio.gather(*burst)
    assert seen_queue > 0
    assert metrics["presage_backend_workers"] == 1.0
    # one worker serves FIFO: the k-th request served waited for the k-1 before it
    waits = sorted(a["queue_s"] for a in answers)
    assert waits[-1] > waits[0]
    services = sorted(a["service_s"] for a in answers)
    assert waits[-1] >= sum(services[: n // 2])  # the last one waited for (at least) half the others
    assert all(a["size"] == 256 and a["frames"] == imaging.FRAMES_PER_MULT for a in answers)


async def test_metrics_parse_and_count_what_was_served(one_worker: tuple[str, Backend]) -> None:
    url, _ = one_worker
    async with aiohttp.ClientSession() as session:
        for size in ("64", "128"):
            async with session.post(f"{url}/work", params={"size": size}, data=b"x" * 1000) as resp:
                assert resp.status == 200
        async with session.get(f"{url}/work", headers={CLASS_HEADER: "96"}) as resp:
            assert (await resp.json())["size"] == 96
        async with session.get(f"{url}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        async with session.get(f"{url}/healthz") as resp:
            assert await resp.json() == {"id": "t1", "workers": 1, "work_mult": 1.0, "work": "imaging"}
    families = {fam.name: fam.type for fam in text_string_to_metric_families(text)}
    assert families["presage_backend_in_flight"] == "gauge"
    assert families["presage_backend_queue_length"] == "gauge"
    assert families["presage_backend_workers"] == "gauge"
    assert families["presage_backend_served"] == "counter"
    values = scrape(text)
    assert values["presage_backend_served_total"] == 3.0
    assert values["presage_backend_in_flight"] == 0.0
    assert values["presage_backend_queue_length"] == 0.0


@pytest.mark.parametrize(
    ("params", "headers", "reason"),
    [
        ({"size": "abc"}, {}, "size: not a number"),
        ({"size": "5000"}, {}, "size: must be an image side in 16..1024"),
        ({"size": "8"}, {}, "size: must be an image side"),
        ({"size": "12.5"}, {}, "size: the image side must be a whole number"),
        ({"size": "nan"}, {}, "size: the image side must be a whole number"),
        ({}, {CLASS_HEADER: "-3"}, f"{CLASS_HEADER}: must be an image side"),
    ],
)
async def test_a_bad_size_is_a_400_with_the_reason(
    one_worker: tuple[str, Backend], params: dict[str, str], headers: dict[str, str], reason: str
) -> None:
    url, backend = one_worker
    async with aiohttp.ClientSession() as session, session.get(f"{url}/work", params=params,
                                                               headers=headers) as resp:
        assert resp.status == 400
        assert reason in await resp.text()
    assert backend.served == 0


def test_the_size_comes_from_the_query_first_then_the_class_header() -> None:
    assert parse_side("128", "512") == 128
    assert parse_side(None, "512") == 512
    assert parse_side(None, None) == imaging.DEFAULT_SIDE
    assert parse_side(None, "") == imaging.DEFAULT_SIDE


def test_work_grows_with_size_and_frames() -> None:
    small, large = imaging.filter_movie(64, 1), imaging.filter_movie(128, 2)
    assert (small.side, small.frames, large.frames) == (64, 1, 2)
    assert small.picks > 0 and large.picks > 0
    assert imaging.frames_for(1.5) == 6 and imaging.frames_for(0.01) == 1
    assert imaging.work_units(256, 4) == 4 * imaging.work_units(256, 1)


def test_the_checksum_work_hashes_a_block_sized_by_the_side_once_per_frame() -> None:
    assert len(checksum._block(64)) == 64 * 64 * checksum.BYTES_PER_PIXEL
    one, again = checksum.checksum_object(64, 3, 7), checksum.checksum_object(64, 3, 7)
    assert (one.side, one.frames, one.picks) == (again.side, again.frames, again.picks) == (64, 3, one.picks)
    # the digest of the last pass, salted by the request number and the pass
    expected = hashlib.sha256(b"7:2")
    expected.update(checksum._block(64))
    assert one.picks == expected.digest()[0]
    assert work.kind("checksum").run is checksum.checksum_object
    assert work.kind("imaging").run is imaging.filter_movie
    with pytest.raises(ValueError, match="must be an image side"):
        checksum.prepare(9)
    with pytest.raises(ValueError, match="unknown work kind 'mining'"):
        work.kind("mining")


async def test_a_checksum_backend_serves_the_same_routes() -> None:
    backend = Backend("c1", workers=1, work_mult=1.0, delay_ms=0.0, max_queue=8, work_kind="checksum")
    runner = web.AppRunner(make_app(backend), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/work", params={"size": "64"}) as resp:
                assert resp.status == 200
                body = await resp.json()
            expected = checksum.checksum_object(64, backend.frames, 0)
            assert (body["size"], body["frames"], body["picks"]) == (64, backend.frames, expected.picks)
            async with session.get(f"{url}/healthz") as resp:
                assert (await resp.json())["work"] == "checksum"
    finally:
        await runner.cleanup()
        backend.close()


async def test_presage_backend_serves_until_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    cmd = [sys.executable, "-m", "proxy.cli", "backend", "--id", "cli", "--port", "0", "--workers", "1",
           "--warm", "64", "--ready-file", str(ready)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(300):  # bounded: start-up is ~1 s of imports
            if ready.exists() or proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        url = ready.read_text().strip()
        async with aiohttp.ClientSession() as session, session.get(f"{url}/work?size=64") as resp:
            assert resp.status == 200 and resp.headers[BACKEND_HEADER] == "cli"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "0"], "--workers: must be 1..256"),
        (["--port", "70000"], "--port: must be 0..65535"),
        (["--work-mult", "-1"], "--work-mult: must be a finite number >= 0"),
        (["--warm", "9"], "--warm: must be an image side"),
        (["--max-queue", "0"], "--max-queue: must be 1..1000000"),
        (["--work", "mining"], "--work: invalid choice: 'mining'"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--id", "x", "--port", "0", *flags])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert main(["--id", "x", "--port", "0", "--work-mult", "0"]) == 2
