"""One short, bounded run of the whole harness with real processes: a two-backend testbed (embedded
Redis, agents, a noisy neighbour when stress-ng is installed), collection through a recording
proxy, ``presage train`` (one small model family), then three policies on the same requests:
round_robin, predicted and the oracle plugin. Asserts that every phase ran and the outputs are
well-formed; never how fast anything was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest.bench import contenders
from loadtest.bench.cli import Plan, run
from loadtest.bench.phases import Settings
from loadtest.testbed.scenario import scenario_from_mapping

TINY = {
    "name": "tiny",
    "duration_s": 3,
    "slo_p95_s": 0.5,
    "seed": 3,
    "trace": {"kind": "constant", "low_rps": 30, "high_rps": 40},
    "sizes": {64: 0.7, 128: 0.3},
    "backends": [
        {"id": "b1", "workers": 2, "cpu_quota_cores": 0.5},
        {"id": "b2", "workers": 1, "cpu_quota_cores": 0.3, "work_mult": 1.5},
    ],
    "episodes": [{"backend": "b1", "start_s": 1, "duration_s": 1.5, "kind": "cpu", "workers": 1}],
}
TRAIN_ARGS = (
    "--families", "ridge", "--size", "small", "--timing-calls", "50", "--no-per-backend",
    "--min-samples", "40", "--k-grid", "4",
)  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(110)
async def test_collect_train_and_evaluate_three_policies(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    settings = Settings(
        out=out, contenders=contenders.select("round_robin,predicted,oracle"), collect_seed=3, eval_seed=4,
        lead_s=0.5, settle_s=0.2, train_args=TRAIN_ARGS, train_timeout_s=60.0, calibrate_s=1.0, rounds=2,
    )  # fmt: skip
    progress: list[str] = []
    results = await run(
        Plan(scenario_from_mapping(TINY), settings, None, "presage bench (test)"), progress.append
    )

    for name in ("results.json", "results.md", "latency_cdf.png", "timeline.png", "samples.jsonl"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "model" / "model.json").is_file()
    assert any(line.startswith("collect:") for line in progress)
    assert any(line.startswith("train:") and "FAILED" not in line for line in progress)

    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["seeds"] == {"collect": 3, "evaluate": 4}
    assert on_disk["timing"]["total_s"] > on_disk["timing"]["evaluate_s"] > 0
    assert on_disk["collection"]["ok"] > 0
    assert set(on_disk["calibration"]) == {"b1", "b2"}
    assert all(c["requests"] > 0 and c["overhead_s"] is not None for c in on_disk["calibration"].values())
    hidden = json.loads((out / "hidden_state.json").read_text())
    assert set(hidden["request_overhead_s"]) == {"b1", "b2"}
    assert on_disk["model"]["family"] in ("ridge", "table")  # the per-cell table always competes (train)
    assert "cpu_limits" in on_disk["capabilities"]
    assert [p["name"] for p in on_disk["policies"]] == ["round_robin", "predicted", "oracle"]
    counts = set()
    for policy in on_disk["policies"]:
        figures = policy["figures"]
        assert policy["status"] == "measured", policy["reason"]
        assert figures["ok"] == figures["count"] > 0
        assert figures["errors"] == 0 and figures["dropped"] == 0
        assert set(figures["backend_share"]) <= {"b1", "b2"}
        counts.add(figures["count"])
    assert len(counts) == 1  # the same arrival sequence for every policy
    predicted = on_disk["policies"][1]
    assert predicted["proxy"]["decisions"] > 0
    assert set(on_disk["comparison"]["ratios"]) == {"round_robin", "predicted", "oracle"}
    assert on_disk["comparison"]["best"]["p99"]["policy"] == "round_robin"  # the only baseline
    table = (out / "results.md").read_text()
    assert "| predicted |" in table and "| oracle (reference) |" in table
    assert results["comparison"] == on_disk["comparison"]
    # two rounds, order rotated: every policy ran twice on the same arrivals; figures are combined
    assert on_disk["rounds"] == 2 and on_disk["comparison"]["rounds"] == 2
    order = ["round_robin", "predicted", "oracle"]
    assert [[e["name"] for e in rnd] for rnd in on_disk["runs"]] == [order] * 2  # stored in table order
    for policy in on_disk["policies"]:
        runs = [e for rnd in on_disk["runs"] for e in rnd if e["name"] == policy["name"]]
        per_round = [e["figures"]["count"] for e in runs]
        assert policy["rounds"] == 2 and policy["figures"]["count"] == sum(per_round)
    assert "Medians over 2 rounds" in table
    rounds = [line for line in progress if line.startswith("round ")]
    assert rounds == [
        "round 1/2: round_robin, predicted, oracle",
        "round 2/2: predicted, oracle, round_robin",
    ]
