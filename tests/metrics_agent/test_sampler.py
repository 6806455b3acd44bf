"""Sources read real /proc, real cgroups (when this test may create them) and real processes."""

import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from metrics_agent import schema
from metrics_agent.sampler import (
    CgroupSource,
    HostSource,
    ProcessSource,
    PsiSource,
    Sampler,
    SourceAbsent,
    build_sources,
    cgroup_mounts,
    read_psi_some_avg10,
    resolve_cgroup,
)

BUSY = "import time\nend = time.time() + 30\nwhile time.time() < end: pass"
BUSY_TREE = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", {BUSY!r}])
print("ready", flush=True)
try:
    time.sleep(30)
finally:
    child.kill()
    child.wait()
"""


@pytest.fixture
def busy_tree() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", BUSY_TREE], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


def test_host_source_reports_rates_on_the_second_read() -> None:
    src = HostSource()
    first = src.read(time.monotonic())
    assert "host_cpu_util" not in first  # a rate needs two readings
    time.sleep(0.2)
    got = src.read(time.monotonic())
    assert 0.0 <= got["host_cpu_util"] <= 1.0
    assert 0.0 < got["host_mem_used_frac"] < 1.0
    assert got["host_ctx_switches_per_s"] > 0
    assert set(got) <= set(schema.HOST_METRICS)


def test_process_source_sums_the_process_and_its_children(busy_tree: subprocess.Popen[str]) -> None:
    src = ProcessSource(busy_tree.pid)
    src.read(time.monotonic())
    time.sleep(0.6)
    got = src.read(time.monotonic())
    assert got["proc_cpu_util"] > 0.05  # the busy grandchild, not the sleeping parent
    assert got["proc_threads"] >= 2  # two processes
    assert got["proc_rss_bytes"] > 1_000_000
    assert got["proc_open_files"] >= 3


def test_a_process_that_exits_becomes_missing_metrics_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    sampler = Sampler([ProcessSource(proc.pid)])
    values, missing = sampler.sample(time.monotonic())
    assert "proc_rss_bytes" not in missing and values[schema.BASE_METRICS.index("proc_rss_bytes")] > 0
    proc.kill()
    proc.wait()
    with caplog.at_level(logging.WARNING, logger="presage.agent"):
        for _ in range(3):
            values, missing = sampler.sample(time.monotonic())
    assert set(schema.PROCESS_METRICS) <= set(missing)
    assert values[schema.BASE_METRICS.index("proc_rss_bytes")] == 0.0
    assert len([r for r in caplog.records if "process failing" in r.getMessage()]) == 1


def test_flags_naming_nothing_are_configuration_errors() -> None:
    with pytest.raises(ValueError, match="--pid"):
        build_sources(pid=2**22 + 12345, cgroup=None, scrape=None, interval_s=0.5)
    with pytest.raises(ValueError, match="--cgroup"):
        build_sources(pid=None, cgroup=f"/no-such-{uuid.uuid4().hex}", scrape=None, interval_s=0.5)
    with pytest.raises(ValueError, match="--scrape"):
        build_sources(pid=None, cgroup=None, scrape="not a url", interval_s=0.5)


def test_without_flags_only_machine_sources_run_and_the_rest_is_missing() -> None:
    sampler = Sampler(build_sources(pid=None, cgroup=None, scrape=None, interval_s=0.5))
    sampler.sample(time.monotonic())
    values, missing = sampler.sample(time.monotonic() + 0.01)
    assert len(values) == len(schema.BASE_METRICS)
    for group in (schema.PROCESS_METRICS, schema.CGROUP_METRICS, schema.APP_METRICS):
        assert set(group) <= set(missing)
    assert "host_mem_used_frac" not in missing


def test_psi_files_parse_and_an_absent_directory_is_absent(tmp_path: Path) -> None:
    (tmp_path / "cpu.pressure").write_text(
        "some avg10=1.50 avg60=0.20 avg300=0.00 total=123\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    )
    assert read_psi_some_avg10(tmp_path / "cpu.pressure") == 1.5
    src = PsiSource(tmp_path, "cg", ".pressure")
    assert src.read(0.0) == {"cg_psi_cpu_some_avg10": 1.5}
    with pytest.raises(SourceAbsent):
        PsiSource(tmp_path / "nothing", "host")
    if Path("/proc/pressure/cpu").exists():
        got = PsiSource(Path("/proc/pressure"), "host").read(0.0)
        assert set(got) <= set(schema.HOST_METRICS) and got


def _fake_v2(tmp_path: Path) -> Path:
    """A pure cgroup v2 layout (as on a systemd machine), for the parts this host's kernel lacks."""
    root = tmp_path / "cg2"
    app = root / "app.slice"
    app.mkdir(parents=True)
    (app / "cpu.stat").write_text("usage_usec 1000000\nuser_usec 1\nsystem_usec 1\nnr_periods 10\n"
                                  "nr_throttled 4\nthrottled_usec 200000\n")  # fmt: skip
    (app / "cpu.max").write_text("50000 100000\n")
    (app / "memory.current").write_text("1048576\n")
    (app / "memory.max").write_text("4194304\n")
    for res in ("cpu", "memory", "io"):
        (app / f"{res}.pressure").write_text("some avg10=2.00 avg60=0 avg300=0 total=1\n")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"30 23 0:26 / {root} rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n")
    return mountinfo


def test_a_v2_layout_gives_quota_throttling_memory_and_pressure(tmp_path: Path) -> None:
    mounts = cgroup_mounts(str(_fake_v2(tmp_path)))
    dirs = resolve_cgroup("/app.slice", mounts)
    assert dirs.v2 == tmp_path / "cg2" / "app.slice" and dirs.cpu is None
    src = CgroupSource(dirs)
    first = src.read(100.0)
    (dirs.v2 / "cpu.stat").write_text("usage_usec 1500000\nnr_throttled 6\nthrottled_usec 300000\n")
    got = src.read(101.0)
    assert "cg_cpu_util" not in first
    assert got["cg_cpu_util"] == pytest.approx(0.5)
    assert got["cg_cpu_quota_cores"] == 0.5
    assert got["cg_throttled_periods_per_s"] == pytest.approx(2.0)
    assert got["cg_throttled_seconds_per_s"] == pytest.approx(0.1)
    assert got["cg_mem_used_bytes"] == 1048576 and got["cg_mem_limit_frac"] == 0.25
    assert got["cg_psi_io_some_avg10"] == 2.0
    # the same cgroup named by its directory
    assert resolve_cgroup(str(tmp_path / "cg2" / "app.slice"), mounts).v2 == dirs.v2


def _can_make_cgroups() -> bool:
    return os.access("/sys/fs/cgroup/cpu", os.W_OK) and os.access("/sys/fs/cgroup/unified", os.W_OK)


@pytest.fixture
def busy_in_cgroups() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A busy process in a fresh cgroup on the v1 cpu/cpuacct/memory hierarchies and on cgroup2."""
    name = f"presage-test-{uuid.uuid4().hex[:8]}"
    made = []
    proc = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        for hier in ("cpu", "cpuacct", "memory", "unified"):
            d = Path("/sys/fs/cgroup") / hier / name
            d.mkdir()
            made.append(d)
        (made[0] / "cpu.cfs_quota_us").write_text("20000")  # 0.2 of a core per 100 ms period
        for d in made:
            (d / "cgroup.procs").write_text(str(proc.pid))
        yield name, proc
    finally:
        proc.kill()
        proc.wait()
        for d in made:
            for _ in range(50):  # rmdir succeeds once the killed task has left the cgroup
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)


@pytest.mark.skipif(not _can_make_cgroups(), reason="needs permission to create cgroups")
def test_real_v1_and_v2_cgroups_of_a_throttled_process(
    busy_in_cgroups: tuple[str, subprocess.Popen[bytes]],
) -> None:
    name, _ = busy_in_cgroups
    mounts = cgroup_mounts()
    v1 = CgroupSource(resolve_cgroup(f"/sys/fs/cgroup/cpu/{name}", mounts))  # prefers v1 files
    v2 = CgroupSource(resolve_cgroup(f"/sys/fs/cgroup/unified/{name}", mounts))  # prefers v2 files
    assert v1.dirs.prefer_v1 and not v2.dirs.prefer_v1
    for src in (v1, v2):
        src.read(time.monotonic())
    time.sleep(1.0)
    got1, got2 = v1.read(time.monotonic()), v2.read(time.monotonic())
    for got in (got1, got2):
        assert 0.0 < got["cg_cpu_util"] < 0.5  # capped near 0.2 by the quota
        assert got["cg_cpu_quota_cores"] == pytest.approx(0.2)  # v2 has no cpu controller here: from v1
        assert got["cg_throttled_periods_per_s"] > 0
        assert got["cg_mem_used_bytes"] > 0
    assert "cg_psi_cpu_some_avg10" in got2  # pressure files exist only on cgroup2
