"""``presage demo``'s plan: a valid built-in scenario, the policies it compares, short enough for
about two minutes, and clear errors for bad arguments. (The harness it runs is exercised end to end
by ``tests/loadtest/bench/test_bench_e2e.py``; a whole demo is too long for the suite.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest import demo
from loadtest.bench import budget
from loadtest.bench.cli import estimate_s


def test_the_demo_plan_is_a_short_collect_train_compare_run() -> None:
    plan = demo.demo_plan([])
    names = [c.name for c in plan.settings.contenders]
    assert names == ["round_robin", "peak_ewma", "predicted", "oracle", "nginx_random_two"]
    assert plan.settings.out == Path("out/demo")
    assert plan.settings.collect_seed != plan.settings.eval_seed
    assert plan.settings.model_dir is None  # it collects and trains
    assert len(plan.scenario.backends) == 3 and plan.scenario.episodes
    # "about two minutes": the estimate (what the demo prints) is conservative; with three
    # collection passes it says 145 s where `./dev demo` measured 2 min 1 s on this machine
    assert estimate_s(plan) <= 150
    assert plan.scenario.duration_s >= budget.MIN_RUN_S


def test_the_demo_takes_an_output_directory_and_a_policy_list(tmp_path: Path) -> None:
    plan = demo.demo_plan(["--out", str(tmp_path), "--policies", "round_robin,oracle", "--seed", "9"])
    assert plan.settings.out == tmp_path
    assert [c.name for c in plan.settings.contenders] == ["round_robin", "oracle"]
    assert (plan.settings.collect_seed, plan.settings.eval_seed) == (9, 10)


def test_an_unknown_policy_is_refused_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--policies", "round_robin,fastest"]) == 2
    assert "unknown fastest" in capsys.readouterr().err


def test_a_bad_flag_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--seed", "many"]) == 2
    assert "--seed" in capsys.readouterr().err
