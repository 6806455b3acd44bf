"""The Testbed with real processes: backends in their cgroups, agents, Redis, stress-ng neighbours."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import aiohttp
import psutil
import pytest
import redis

from loadtest.bench.hidden_state import load_hidden_state
from loadtest.testbed import cgroups
from loadtest.testbed.interference import find_stress_ng
from loadtest.testbed.scenario import BackendSpec, Episode, Scenario, SizeMix, TraceSpec
from loadtest.testbed.stack import Testbed, TestbedError

pytestmark = pytest.mark.timeout(60)

HAVE_AGENT = importlib.util.find_spec("metrics_agent.cli") is not None
try:
    cgroups.detect()
    CGROUP_REASON = ""
except (cgroups.CgroupUnavailable, OSError) as exc:
    CGROUP_REASON = str(exc)


def small_scenario(episodes: tuple[Episode, ...] = (), cpu_period_ms: float = 100.0) -> Scenario:
    return Scenario(
        name="two",
        backends=(BackendSpec("fast", 1, None, 1.0, 0.0), BackendSpec("slow", 1, 0.15, 1.0, 0.0)),
        episodes=episodes,
        trace=TraceSpec("constant", 10, 10),
        duration_s=10.0,
        slo_p95_s=0.1,
        sizes=SizeMix(((128, 0.5), (256, 0.5))),
        seed=5,
        cpu_period_ms=cpu_period_ms,
    )


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")


async def burst_service_s(session: aiohttp.ClientSession, url: str, n: int) -> float:
    """Sum of the worker wall time of ``n`` concurrent medium requests (CPU quota throttling shows here)."""

    async def one() -> float:
        async with session.get(f"{url}/work", params={"size": "256"}) as resp:
            assert resp.status == 200
            return float((await resp.json())["service_s"])

    return sum(await asyncio.gather(*(one() for _ in range(n))))


@pytest.mark.skipif(bool(CGROUP_REASON), reason=f"no writable CPU cgroups here: {CGROUP_REASON}")
async def test_two_backends_start_serve_and_stop_without_leftovers(tmp_path: Path) -> None:
    tb = Testbed(small_scenario(cpu_period_ms=20), tmp_path, agents=HAVE_AGENT, agent_interval_s=0.2)
    async with tb:
        assert [bid for bid, _ in tb.backends] == ["fast", "slow"]
        caps = tb.capabilities
        assert caps["cpu_limits"].startswith("cgroup-v")
        assert {"stress_ng", "interference", "netem", "delay", "redis", "agents"} <= set(caps)
        groups = {bid: Path(p) for bid, p in tb.cgroup_paths.items()}
        for bid, pid in tb.pids.items():
            assert str(pid) in (groups[bid] / "cgroup.procs").read_text().split()
        if (groups["slow"] / "cpu.cfs_quota_us").exists():
            # 0.15 cores on the scenario's 20-ms period
            assert (groups["slow"] / "cpu.cfs_period_us").read_text().strip() == "20000"
            assert (groups["slow"] / "cpu.cfs_quota_us").read_text().strip() == "3000"
            assert (groups["fast"] / "cpu.cfs_quota_us").read_text().strip() == "-1"
        elif (groups["slow"] / "cpu.max").exists():
            assert (groups["slow"] / "cpu.max").read_text().split() == ["3000", "20000"]
        if HAVE_AGENT:  # an agent beside each backend, scraping it and reading its cgroup, has pushed
            assert tb.capabilities["agents"].startswith("presage agent")
            argv = tb.agent_children["slow"].argv
            assert argv[argv.index("--scrape") + 1] == dict(tb.backends)["slow"] + "/metrics"
            assert argv[argv.index("--cgroup") + 1] == str(groups["slow"])
            client = redis.Redis.from_url(tb.redis_url)
            try:
                assert client.exists("presage:fv:fast") and client.exists("presage:fv:slow")
            finally:
                client.close()
        used = tb.cpu_usage_s("slow")
        async with aiohttp.ClientSession() as session:
            fast = await burst_service_s(session, dict(tb.backends)["fast"], 6)
            slow = await burst_service_s(session, dict(tb.backends)["slow"], 6)
        assert slow > fast  # the 0.15-core quota stretches every request's service
        assert used is not None and (tb.cpu_usage_s("slow") or 0.0) > used  # the work ran in its group
        started = [*tb.pids.values(), *(c.pid for c in tb.agent_children.values())]
        run_dirs = list(tb._groups.run_dirs) if tb._groups else []
    assert tb.leftovers == []
    assert sorted(tb.stopped_pids) == sorted(started)
    assert not any(alive(pid) for pid in started)
    assert not any(d.exists() for d in run_dirs)
    assert not any(g.exists() for g in groups.values())
    if not HAVE_AGENT:  # everything else ran; say plainly that the agent part could not
        pytest.skip("presage agent (metrics_agent.cli) is not installed: agents were not started")


async def test_without_cgroups_a_quota_is_fewer_workers_more_work_and_a_pinned_cpu(tmp_path: Path) -> None:
    scenario = Scenario(
        name="nocg",
        backends=(BackendSpec("q", 3, 0.5, 1.0, 0.0),),
        episodes=(),
        trace=TraceSpec("constant", 1, 1),
        duration_s=5,
        slo_p95_s=0.1,
        sizes=SizeMix(((64, 1.0),)),
        work="checksum",  # (and the scenario's kind of work reaches the backend and the oracle)
    )
    async with Testbed(scenario, tmp_path, agents=False, use_cgroups=False) as tb:
        assert tb.capabilities["cpu_limits"].startswith("workers+work_mult")
        assert tb.cgroup_paths == {}
        eff = tb.effective["q"]
        assert (eff.workers, eff.work_mult, eff.cpu_quota_cores) == (1, 2.0, None)
        assert os.sched_getaffinity(tb.pids["q"]) == set(eff.cpus)
        async with aiohttp.ClientSession() as session, session.get(dict(tb.backends)["q"] + "/healthz") as r:
            assert await r.json() == {"id": "q", "workers": 1, "work_mult": 2.0, "work": "checksum"}
        tb.write_hidden_state(tmp_path / "hidden.json", t0_wall=1000.0)
    hidden = json.loads((tmp_path / "hidden.json").read_text())
    assert hidden["work"] == "checksum"
    (q,) = hidden["backends"]
    assert (q["workers"], q["work_mult"], q["cpu_quota_cores"], q["cores"]) == (1, 2.0, None, 1.0)
    assert q["cpus"] == list(eff.cpus)
    assert set(load_hidden_state(tmp_path / "hidden.json").backends) == {"q"}


STRESS_NG, STRESS_LINE = find_stress_ng()


@pytest.mark.skipif(STRESS_NG is None, reason=f"stress-ng: {STRESS_LINE}")
@pytest.mark.skipif(bool(CGROUP_REASON), reason=f"no writable CPU cgroups here: {CGROUP_REASON}")
async def test_an_episode_runs_stress_ng_inside_the_target_backends_cgroup_then_ends(tmp_path: Path) -> None:
    episode = Episode("slow", start_s=0.3, duration_s=1.5, kind="cpu", workers=1)
    async with Testbed(small_scenario((episode,)), tmp_path, agents=False) as tb:
        groups = {bid: Path(p) for bid, p in tb.cgroup_paths.items()}
        t0 = time.time()
        scheduler = tb.start_interference(t0)
        tb.write_hidden_state(tmp_path / "hidden.json")
        (run,) = tb.episode_runs()
        for _ in range(300):  # bounded wait for the start at t0 + 0.3 s
            if run.status == "running" and len((groups["slow"] / "cgroup.procs").read_text().split()) >= 3:
                break
            await asyncio.sleep(0.01)
        assert run.status == "running" and run.pid is not None
        in_slow = set((groups["slow"] / "cgroup.procs").read_text().split())
        assert {str(tb.pids["slow"]), str(run.pid)} <= in_slow  # the backend, stress-ng and its worker
        assert len(in_slow) >= 3
        assert (groups["fast"] / "cgroup.procs").read_text().split() == [str(tb.pids["fast"])]
        assert "stress-ng" in cmdline(run.pid)
        neighbours = in_slow - {str(tb.pids["slow"])}
        for _ in range(400):  # bounded wait for the end at t0 + 1.8 s
            if run.status == "done":
                break
            await asyncio.sleep(0.01)
        assert run.status == "done"
        assert run.started_at is not None and run.stopped_at is not None
        assert run.started_at >= t0 + 0.3 - 0.05 and run.stopped_at >= run.started_at
        assert (groups["slow"] / "cgroup.procs").read_text().split() == [str(tb.pids["slow"])]
        assert not any(alive(int(pid)) for pid in neighbours)
        assert scheduler.running() == []
    hidden = json.loads((tmp_path / "hidden.json").read_text())
    (ep,) = hidden["episodes"]
    assert (ep["backend"], ep["kind"], ep["workers"]) == ("slow", "cpu", 1)
    assert ep["start_wall"] == pytest.approx(t0 + 0.3) and ep["end_wall"] == pytest.approx(t0 + 1.8)
    slow = next(b for b in hidden["backends"] if b["id"] == "slow")
    assert (slow["workers"], slow["cpu_quota_cores"], slow["cores"]) == (1, 0.15, 0.15)
    assert set(hidden["size_work_s"]) == {"128", "256"}
    assert hidden["size_work_s"]["256"] > hidden["size_work_s"]["128"] > 0
    state = load_hidden_state(tmp_path / "hidden.json")  # the oracle's reader accepts it
    assert set(state.backends) == {"fast", "slow"} and len(state.episodes) == 1


@pytest.mark.skipif(STRESS_NG is None, reason=f"stress-ng: {STRESS_LINE}")
async def test_stopping_ends_the_neighbours_and_a_schedule_can_run_again(tmp_path: Path) -> None:
    episode = Episode("fast", start_s=0.0, duration_s=8.0, kind="cache", workers=1)
    tb = Testbed(small_scenario((episode,)), tmp_path, agents=False, use_cgroups=not CGROUP_REASON)

    async def running_pid() -> int:
        (run,) = tb.episode_runs()
        for _ in range(300):
            if run.status == "running":
                break
            await asyncio.sleep(0.01)
        assert run.status == "running" and run.pid is not None
        return run.pid

    async with tb:
        tb.start_interference(time.time())
        first = await running_pid()
        with pytest.raises(TestbedError, match="previous schedule still runs"):
            tb.start_interference(time.time())
        await tb.stop_interference()
        assert not alive(first) and tb.episode_runs() == []
        tb.start_interference(time.time())  # the same episodes again, from a new t0
        second = await running_pid()
    assert not alive(second)
    assert tb.leftovers == []


OWNER = """
import asyncio, sys, time
from pathlib import Path
sys.path.insert(0, {here!r})
from test_testbed_stack import small_scenario
from loadtest.testbed.stack import Testbed, TestbedError

async def main():
    tb = Testbed(small_scenario(), Path({workdir!r}), agents=False, use_cgroups={cgroups!r})
    await tb.start()
    print(" ".join(str(p) for p in tb.pids.values()), tb.cgroup_paths.get("slow", "-"), flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_a_killed_owner_takes_its_backends_along_and_its_groups_are_swept(tmp_path: Path) -> None:
    code = OWNER.format(
        here=str(Path(__file__).parent), workdir=str(tmp_path / "owner"), cgroups=not CGROUP_REASON
    )
    owner = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE)
    assert owner.stdout is not None
    line = (await asyncio.wait_for(owner.stdout.readline(), 40)).decode().split()
    owner.kill()  # SIGKILL: no stop(), no finally
    await owner.wait()
    pids, slow_group = [int(p) for p in line[:-1]], line[-1]
    assert len(pids) == 2
    for _ in range(300):  # bounded: PR_SET_PDEATHSIG delivers SIGTERM to each backend at once
        if not any(alive(p) for p in pids):
            break
        await asyncio.sleep(0.02)
    assert not any(alive(p) for p in pids)
    # nor does its embedded Redis outlive it (redis_conn sets PR_SET_PDEATHSIG on the server)
    workdir = str(tmp_path / "owner")
    for _ in range(300):
        servers = [
            p for p in psutil.process_iter(["cmdline"]) if workdir in " ".join(p.info["cmdline"] or ())
        ]
        if not servers:
            break
        await asyncio.sleep(0.02)
    assert not servers
    if not CGROUP_REASON:  # nobody removed the groups (the owner died); the next testbed sweeps them
        run_group = Path(slow_group).parent
        assert run_group.exists()
        assert str(run_group) in cgroups.remove_stale(cgroups.detect())
        assert not run_group.exists()


async def test_a_relative_workdir_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the children (redis-server, backends) run with other working directories than ours
    monkeypatch.chdir(tmp_path)
    async with Testbed(small_scenario(), Path("relative/run"), agents=False, use_cgroups=False) as tb:
        assert tb.workdir.is_absolute()
        async with aiohttp.ClientSession() as session:
            for _, url in tb.backends:
                async with session.get(f"{url}/healthz") as resp:
                    assert resp.status == 200
