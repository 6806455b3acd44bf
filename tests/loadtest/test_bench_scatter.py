"""``loadtest.bench_scatter``: its arguments, the summarising arithmetic on synthetic RTTs, and one
tiny real run (a backend in its own cgroup) whose JSON is checked for structure, not speed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from loadtest import bench_scatter as bs
from loadtest.testbed import cgroups

try:
    cgroups.detect()
    CGROUP_REASON = ""
except (cgroups.CgroupUnavailable, OSError) as exc:
    CGROUP_REASON = str(exc)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sizes", "8"], "argument --sizes: must be an image side in 16..1024"),
        (["--sizes", "128,abc"], "argument --sizes: not a whole number of pixels: 'abc'"),
        (["--sizes", "128,,256"], "argument --sizes: an empty item"),
        (["--sizes", "128,128"], "argument --sizes: an item given twice"),
        (["--periods", "0.5"], "argument --periods: a CFS period must be 1..1000 ms"),
        (["--periods", "2000"], "argument --periods: a CFS period must be 1..1000 ms"),
        (["--periods", "10,soon"], "argument --periods: not a period in ms or 'none': 'soon'"),
        (["--periods", "10,none,NONE"], "argument --periods: a period given twice"),
        (["--periods", "10,10.0"], "argument --periods: a period given twice"),
        (["--quota", "0"], "argument --quota: must be a finite number > 0"),
        (["--quota", "-0.4"], "argument --quota: must be a finite number > 0"),
        (["--quota", "nan"], "argument --quota: must be a finite number > 0"),
        (["--quota", "0.05", "--periods", "10"], "under the kernel's smallest quota (1 ms)"),
        (["--n", "4"], "argument --n: must be >= 5"),
        (["--repeat", "0"], "argument --repeat: must be >= 1"),
        (["--workers", "300"], "argument --workers: must be 1..256"),
        (["--work-mult", "0"], "argument --work-mult: must be a finite number > 0"),
    ],
)
def test_bad_arguments_are_refused_by_name_before_any_work(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        bs.main([*argv, "--out", str(tmp_path / "out.json")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_good_arguments_give_the_settings_and_the_default_counts_per_size() -> None:
    settings, out = bs.parse_args(["--sizes", "128,256,512", "--periods", "10,None,2.5", "--quota", "0.4"])
    assert settings.sizes == (128, 256, 512)
    assert settings.periods_ms == (10.0, None, 2.5)
    assert [settings.requests(s) for s in settings.sizes] == [300, 200, 80]
    assert out == Path("out/bench_scatter.json")
    assert settings.work == "imaging" and bs.parse_args(["--work", "checksum"])[0].work == "checksum"
    # 0.1 core of a 10-ms period is exactly the kernel's smallest quota: allowed
    assert bs.parse_args(["--quota", "0.1", "--periods", "10", "--n", "5"])[0].requests(512) == 5
    # without a quota the quota needs no room in a period
    assert bs.parse_args(["--quota", "0.001", "--periods", "none"])[0].periods_ms == (None,)


def test_without_a_cpu_cgroup_it_exits_2_and_says_it_needs_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.json"
    assert bs.main(["--out", str(out)], cgroup_root=tmp_path) == 2  # no controller mounted there
    err = capsys.readouterr().err
    assert "needs a writable CPU cgroup (run as root)" in err
    assert "no cgroup CPU controller" in err
    assert not out.exists()


def test_identical_rtts_score_100_and_scattered_ones_the_mape_of_the_best_constant() -> None:
    assert bs.best_constant_accuracy([0.004] * 50) == pytest.approx(1.0)
    # four at 1 ms and one at 2 ms: the MAPE-optimal constant is 1 ms (weights 1/y), so the 2-ms
    # request is off by 50 % and the others by 0: MAPE 10 %
    assert bs.best_constant_accuracy([0.001, 0.001, 0.002, 0.001, 0.001]) == pytest.approx(0.9)
    # half at 1 ms, half at 3 ms: the constant is 1 ms (the weights of the 1-ms half reach half the
    # total first); the 3-ms half is off by 2/3: MAPE 1/3
    assert bs.best_constant_accuracy([0.001, 0.003] * 10) == pytest.approx(2 / 3)


def test_the_figures_of_one_run() -> None:
    rtt = [0.001 * (1 + i) for i in range(11)]  # 1..11 ms
    service = [x - 0.001 for x in rtt]
    f = bs.run_figures(rtt, service)
    assert f["rtt_ms_p10_p50_p90"] == pytest.approx([2.0, 6.0, 10.0])
    assert f["service_ms_p10_p50_p90"] == pytest.approx([1.0, 5.0, 9.0])
    assert f["outside_worker_ms_p10_p50_p90"] == pytest.approx([1.0, 1.0, 1.0])
    assert 0 < f["best_constant_accuracy"] < 1


def synthetic_run(size: int, period: float | None, repeat: int, rtt_s: list[float], throttled: int,
                  cores: float | None) -> dict[str, Any]:  # fmt: skip
    return {
        "size": size, "period_ms": period, "quota_cores": None if period is None else 0.4, "repeat": repeat,
        "n": len(rtt_s), **bs.run_figures(rtt_s, rtt_s), "throttled_periods": throttled,
        "cores_used": cores, "steal_pct": float(repeat),
    }  # fmt: skip


def test_the_summary_takes_the_median_over_repeats_and_the_median_runs_percentiles() -> None:
    steady = [0.010] * 20  # 100 %
    mild = [0.010] * 16 + [0.020] * 4  # the 20-ms fifth is off by 50 %: 90 %
    wild = [0.010, 0.030] * 10  # 2/3
    runs = [  # the order of a matrix: repeat, then size, then period
        synthetic_run(256, 10.0, 0, mild, 150, 0.36),
        synthetic_run(256, None, 0, steady, 0, 0.30),
        synthetic_run(256, 10.0, 1, wild, 186, 0.40),
        synthetic_run(256, None, 1, wild, 0, None),
        synthetic_run(256, 10.0, 2, steady, 170, 0.38),
    ]
    quota, free = bs.summarise(runs)
    assert (quota["size"], quota["period_ms"], quota["quota_cores"], quota["runs"]) == (256, 10.0, 0.4, 3)
    assert quota["accuracy_per_run"] == pytest.approx([0.9, 2 / 3, 1.0])
    assert quota["accuracy_median"] == pytest.approx(0.9)
    assert quota["median_run_repeat"] == 0  # the mild run
    assert quota["rtt_ms_p10_p50_p90"] == pytest.approx([10.0, 10.0, 20.0])
    assert quota["throttled_periods_min_max"] == [150, 186]
    assert quota["cores_used_median"] == pytest.approx(0.38)
    assert quota["steal_pct_median"] == pytest.approx(1.0)
    # two repeats: the median is the mean of the two, the median run the upper one; a run without
    # a CPU usage reading is left out of the cores' median
    assert (free["period_ms"], free["quota_cores"], free["runs"]) == (None, None, 2)
    assert free["accuracy_median"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert free["median_run_repeat"] == 0
    assert free["rtt_ms_p10_p50_p90"] == pytest.approx([10.0, 10.0, 10.0])
    assert free["cores_used_median"] == pytest.approx(0.30)

    text = bs.table([quota, free])
    rows = text.splitlines()[2:]
    assert rows == [
        "| 256 | 0.4@10ms | 3 | 90.0 / 66.7 / 100.0 | **90.0** | 10.0/10.0/20.0 | 150-186 | 0.38 | 1.00 |",
        "| 256 | none | 2 | 100.0 / 66.7 | **83.3** | 10.0/10.0/10.0 | 0-0 | 0.30 | 0.50 |",
    ]


@pytest.mark.timeout(60)
@pytest.mark.skipif(bool(CGROUP_REASON), reason=f"no writable CPU cgroups here: {CGROUP_REASON}")
def test_a_tiny_real_run_writes_every_run_and_condition(tmp_path: Path) -> None:
    out = tmp_path / "scatter.json"
    argv = ["--sizes", "64", "--periods", "10,none", "--repeat", "1", "--n", "8", "--seed", "3"]
    assert bs.main([*argv, "--work", "checksum", "--out", str(out)]) == 0  # (the second kind of work)
    result = json.loads(out.read_text())
    assert result["settings"]["sizes"] == [64] and result["settings"]["work"] == "checksum"
    assert result["settings"]["n_per_size"] == {"64": 8}
    assert result["host"]["cgroup_version"] in (1, 2)
    runs = result["runs"]
    assert [(r["size"], r["period_ms"], r["quota_cores"], r["repeat"]) for r in runs] == [
        (64, 10.0, 0.4, 0), (64, None, None, 0)
    ]  # fmt: skip
    for run in runs:
        assert run["n"] == 8
        assert all(len(run[k]) == 8 for k in ("rtt_s", "service_s", "cpu_s", "queue_s"))
        assert all(rtt > service > 0 for rtt, service in zip(run["rtt_s"], run["service_s"], strict=True))
        assert 0 < run["best_constant_accuracy"] <= 1
        assert run["throttled_periods"] >= 0 and run["cores_used"] > 0 and 0 <= run["steal_pct"] <= 100
    assert runs[1]["throttled_periods"] == 0  # no quota, no throttling
    assert [c["runs"] for c in result["conditions"]] == [1, 1]
    per_run = [c["accuracy_per_run"] for c in result["conditions"]]
    assert per_run == [[r["best_constant_accuracy"]] for r in runs]
    # the run group and its children are gone again
    layout = cgroups.detect()
    base = layout.base(layout.cpu_mount, "cpu" if layout.version == 1 else "")
    assert not list(base.glob(f"{cgroups.RUN_PREFIX}{os.getpid()}-*"))
