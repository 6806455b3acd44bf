"""``presage bench`` arguments: what a plan is made of, and bad input refused with exit code 2 and
a message naming it (before anything is started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.bench import cli


def test_quick_plan_fits_its_budget() -> None:
    plan = cli.plan_from_args(["--quick", "--out", "x"])
    assert plan.scenario.name.startswith("quick")
    assert len(plan.settings.contenders) == 9
    assert plan.settings.collect_seed + 1 == plan.settings.eval_seed
    assert plan.settings.train_args == cli.QUICK_TRAIN_ARGS
    assert cli.estimate_s(plan) <= cli.QUICK_BUDGET_S + 1
    assert plan.settings.rounds == 1


def test_the_full_plan_runs_three_rounds_within_its_budget() -> None:
    plan = cli.plan_from_args(["--out", "x"])
    assert plan.scenario.name.startswith("full") and plan.settings.rounds == cli.DEFAULT_ROUNDS == 3
    assert cli.estimate_s(plan) <= cli.FULL_BUDGET_S + 1
    two = cli.plan_from_args(["--out", "x", "--rounds", "2"])
    assert two.scenario.duration_s > plan.scenario.duration_s  # fewer runs: less compression


def test_budget_zero_keeps_the_scenario_and_seed_sets_both_seeds() -> None:
    plan = cli.plan_from_args(["--quick", "--budget", "0", "--seed", "40", "--policies", "round_robin"])
    assert plan.scenario.name == "quick"
    assert (plan.settings.collect_seed, plan.settings.eval_seed) == (40, 41)
    assert [c.name for c in plan.settings.contenders] == ["round_robin"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scenario", "nosuch"], "no built-in scenario 'nosuch'"),
        (["--quick", "--policies", "round_robin,bogus"], "unknown bogus"),
        (["--quick", "--model", "/nonexistent/bundle"], "--model"),
        (["--quick", "--settle", "-1"], "--settle"),
        (["--quick", "--budget", "-5"], "--budget"),
        (["--quick", "--rounds", "0"], "--rounds"),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_scenario_file_with_a_bad_key_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nduration_s: 5\nslo_p95_s: 0.1\ntrace: {kind: constant, low_rps: 1, high_rps: 2}\n"
        "sizes: {64: 1}\nbackends: [{id: a, wrokers: 2}]\n"
    )
    assert cli.main(["--scenario", str(path)]) == 2
    assert "backends[0].wrokers" in capsys.readouterr().err
