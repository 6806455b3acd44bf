"""``python -m loadtest.bench_accuracy``: its plan, the interference scenario it is meant for, and what
it writes; no testbed is started here (the runs take minutes)."""

from pathlib import Path

import numpy as np
import orjson
import pytest

from loadtest import bench_accuracy
from loadtest.bench.cli import COLLECT_PASSES
from loadtest.synth_samples import generate
from loadtest.testbed.scenario import EPISODE_KINDS, load_scenario
from predictor_runtime.train.dataset import build_dataset, read_samples


def test_the_interference_scenario_keeps_to_its_stated_design() -> None:
    sc, full = load_scenario("interference"), load_scenario("full")
    quotas = [b.cpu_quota_cores or 0.0 for b in sc.backends]
    assert sum(quotas) <= 1.2 and sc.cpu_period_ms == 10 and len(set(quotas)) == len(quotas)
    assert sc.sizes == full.sizes  # the shoot-out's application: only load and co-location differ
    assert sc.trace.high_rps < full.trace.low_rps  # well below the shoot-out's load
    assert {e.kind for e in sc.episodes} == set(EPISODE_KINDS)
    for b in sc.backends:
        mine = [e for e in sc.episodes if e.backend == b.id]
        assert len(mine) >= 3 and len({e.kind for e in mine}) >= 3  # several kinds of neighbour
        busy = sum(e.duration_s for e in mine)
        assert busy < sc.duration_s  # and quiet stretches
    # some neighbour somewhere at almost every second, and the set of stressed backends changes
    seconds = np.arange(0.5, sc.duration_s, 1.0)
    active = [frozenset(e.backend for e in sc.episodes if e.start_s <= t < e.end_s) for t in seconds]
    assert np.mean([len(a) >= 1 for a in active]) > 0.95
    assert len(set(active)) >= 8
    assert max(len(a) for a in active) >= 3


def test_plan_default_list_and_budget() -> None:
    plan = bench_accuracy.plan_from_args([])
    (job,) = plan.jobs
    assert job.scenario.name == "interference" and job.seed == job.scenario.seed
    assert job.out == Path("out/bench-accuracy/interference")

    plan = bench_accuracy.plan_from_args(["--scenario", "interference,full", "--seed", "5", "--out", "x"])
    assert [j.scenario.name for j in plan.jobs] == ["interference", "full"]
    assert [j.seed for j in plan.jobs] == [5, 5] and plan.jobs[1].out == Path("x/full")
    assert all(j.scenario.duration_s == 120 for j in plan.jobs)  # no budget: nothing compressed

    (job,) = bench_accuracy.plan_from_args(["--scenario", "full", "--budget", "400"]).jobs
    assert job.scenario.duration_s < 120 and "time)" in job.scenario.name
    # the training passes and the later run, each with its overhead, fit within the budget
    assert (COLLECT_PASSES + 1) * (job.scenario.duration_s + 5.0) < 400


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--scenario", "nosuch"], "no built-in scenario 'nosuch'"),
        (["--budget", "-1"], "--budget: must be >= 0"),
        (["--scenario", "full,full"], "named twice"),
        (["--scenario", ","], "no scenario named"),
    ],
)
def test_bad_arguments_are_named(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=message):
        bench_accuracy.plan_from_args(argv)
    assert bench_accuracy.main(argv) == bench_accuracy.EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_regime_counts_requests_that_found_their_backend_idle(tmp_path: Path) -> None:
    path = generate(tmp_path / "s.jsonl", n_samples=600, n_backends=3, seed=3)
    figures = bench_accuracy.regime(path)
    ds = build_dataset(read_samples([str(path)]), min_samples=1)
    inflight = ds.columns(["proxy_in_flight"])[:, 0]
    assert figures["idle_share"] == pytest.approx(np.mean(inflight == 0))
    assert figures["mean_in_flight"] == pytest.approx(np.mean(inflight))


def _entry(name: str, accuracy: float) -> dict:
    return {
        "scenario": name,
        "model": {"samples_used": 6000},
        "later_run": {"idle_share": 0.8},
        "holdout": {
            "family": "lgbm", "samples_used": 2000, "bundle_accuracy": 0.91, "median_rtt_s": 0.02,
            "metrics": {"accuracy": accuracy, "mae_s": 0.003, "p95_ape": 0.4, "spearman": 0.9},
            "noise": {"accuracy": 0.93}, "decision_share": {"p50": 0.002, "p99": 0.005},
            "calibrated": {"accuracy": 0.92},
        },
    }  # fmt: skip


def test_table_and_json_side_by_side(tmp_path: Path) -> None:
    entries = [_entry("interference", 0.905), {"scenario": "full", "error": "RuntimeError: boom"}]
    text = bench_accuracy.table(entries)
    lines = text.splitlines()
    assert len(lines) == 4 and all(line.count("|") == lines[0].count("|") for line in lines)
    assert "| interference | 6000 | 2000 | 80.0% | lgbm | 91.0% | **90.5%** | 92.0% |" in text
    older = _entry("full", 0.5)  # a run recorded before the refit was reported: its column says so
    del older["holdout"]["calibrated"]
    assert "| **50.0%** | - |" in bench_accuracy.table([older])
    assert "| 0.20% / 0.50% |" in text and "failed: RuntimeError: boom" in text

    plan = bench_accuracy.plan_from_args(["--scenario", "interference,full", "--out", str(tmp_path)])
    doc = orjson.loads(bench_accuracy.write_json(plan, entries).read_bytes())
    assert doc["target"] == {"accuracy": 0.9, "decision_share_of_median_rtt": 0.01}
    assert [e["scenario"] for e in doc["scenarios"]] == ["interference", "full"]
    assert doc["command"].startswith("python -m loadtest.bench_accuracy --scenario interference,full")


def test_the_long_interference_variant_only_triples_the_work_and_slows_the_rate() -> None:
    base, long = load_scenario("interference"), load_scenario("interference-long")
    assert long.episodes == base.episodes and long.sizes == base.sizes and long.cpu_period_ms == 10
    for b, lb in zip(base.backends, long.backends, strict=True):
        same = ("id", "workers", "cpu_quota_cores", "delay_ms")
        assert [getattr(lb, f) for f in same] == [getattr(b, f) for f in same]
        assert lb.work_mult == 3 * b.work_mult
    # ~16 ms of CPU a request instead of ~7: the rate falls by about as much
    assert 2.0 <= base.trace.high_rps / long.trace.high_rps <= 2.6
    assert 2.0 <= base.trace.low_rps / long.trace.low_rps <= 2.6


def test_the_quiet_variant_is_the_interference_regime_without_neighbours() -> None:
    base, quiet = load_scenario("interference"), load_scenario("interference-quiet")
    assert quiet.episodes == () and base.episodes
    assert (quiet.backends, quiet.trace, quiet.sizes, quiet.cpu_period_ms, quiet.duration_s) == (
        base.backends, base.trace, base.sizes, base.cpu_period_ms, base.duration_s
    )


def test_the_core_variants_trade_the_fractional_quota_for_work_and_keep_the_rest() -> None:
    from loadtest.testbed import imaging

    quiet, core_quiet = load_scenario("interference-quiet"), load_scenario("interference-core-quiet")
    assert core_quiet.episodes == ()
    assert (core_quiet.trace, core_quiet.sizes, core_quiet.duration_s, core_quiet.cpu_period_ms) == (
        quiet.trace, quiet.sizes, quiet.duration_s, quiet.cpu_period_ms
    )
    for b, cb in zip(quiet.backends, core_quiet.backends, strict=True):
        assert (cb.id, cb.workers, cb.delay_ms) == (b.id, b.workers, b.delay_ms)
        assert cb.cpu_quota_cores == 1.0  # one busy worker thread never exhausts it
        # the same core-time per request: frames on a whole core = the old frames / the old quota
        assert imaging.frames_for(cb.work_mult) == round(imaging.frames_for(b.work_mult) / b.cpu_quota_cores)
    core = load_scenario("interference-core")
    assert core.episodes == load_scenario("interference").episodes
    assert (core.backends, core.trace, core.sizes, core.duration_s, core.cpu_period_ms) == (
        core_quiet.backends, core_quiet.trace, core_quiet.sizes, core_quiet.duration_s,
        core_quiet.cpu_period_ms,
    )  # fmt: skip
