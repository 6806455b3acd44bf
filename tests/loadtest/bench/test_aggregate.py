"""The bench's arithmetic on constructed results: the best non-predictive baseline, ratios, the
targets' verdict, the markdown table, the proxy's Prometheus figures, contender selection and the
time compression that fits a scenario into its budget."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from loadtest.bench import aggregate, budget, contenders
from loadtest.bench.prom import proxy_figures
from loadtest.testbed.scenario import load_scenario


def entry(name: str, mean_ms: float, p99_ms: float, *, errors: int = 0, **kw: Any) -> dict[str, Any]:
    figures = {
        "count": 1000, "ok": 1000 - errors, "errors": errors, "dropped": 0, "achieved_rps": 99.5,
        "offered_rps": 100.0, "mean_s": mean_ms / 1e3, "p50_s": mean_ms / 2e3, "p95_s": p99_ms / 2e3,
        "p99_s": p99_ms / 1e3, "slo_breach_share": 0.25, "backend_share": {}, "windows": [],
    }  # fmt: skip
    out = {"name": name, "label": name, "family": "presage", "predictive": False, "status": "measured",
           "reason": None, "figures": figures, "proxy": None}  # fmt: skip
    out.update(kw)
    return out


def shoot_out() -> list[dict[str, Any]]:
    return [
        entry("round_robin", 40, 400),
        entry("least_request", 20, 150),
        entry("nginx_random_two", 18, 200, family="external", label="NGINX random two least_conn"),
        # fast but failing: never the baseline
        entry("haproxy_leastconn", 5, 50, errors=100, family="external"),
        entry("predicted", 15, 100, predictive=True,
              proxy={"live_accuracy": 0.81, "fallbacks": {"ood": 12, "stale": 0}, "fallback_share": 0.012,
                     "decisions": 1000, "decision_mean_s": 60e-6, "decision_p50_le_s": 20e-6,
                     "decision_p99_le_s": 250e-6, "table_hits": 900}),
        entry("oracle", 10, 80, family="reference", label="oracle (reference)"),
        {"name": "nginx_least_conn", "label": "NGINX least_conn", "family": "external", "predictive": False,
         "status": "skipped", "reason": "/usr/sbin/nginx not installed", "figures": None, "proxy": None},
    ]  # fmt: skip


def test_best_baseline_excludes_predicted_oracle_failing_and_absent_policies() -> None:
    policies = shoot_out()
    assert aggregate.best_baseline(policies, "p99_s")["name"] == "least_request"  # type: ignore[index]
    assert aggregate.best_baseline(policies, "mean_s")["name"] == "nginx_random_two"  # type: ignore[index]


def test_ratios_use_each_metrics_own_best_and_compare_predicted_with_the_oracle() -> None:
    comparison = aggregate.compare(shoot_out())
    assert comparison["best"]["p99"] == {"policy": "least_request", "value_s": pytest.approx(0.15)}
    assert comparison["best"]["mean"]["policy"] == "nginx_random_two"
    predicted = comparison["ratios"]["predicted"]
    assert predicted["p99_to_best"] == pytest.approx(100 / 150)
    assert predicted["mean_to_best"] == pytest.approx(15 / 18)
    assert comparison["ratios"]["least_request"]["p99_to_best"] == pytest.approx(1.0)
    assert "nginx_least_conn" not in comparison["ratios"]
    assert comparison["predicted_vs_oracle"] == {"p99": pytest.approx(1.25), "mean": pytest.approx(1.5)}
    targets = comparison["targets"]
    assert targets["p99_met"] is True  # 0.667 <= 0.7
    assert targets["mean_met"] is True  # 0.833 <= 0.85
    assert targets["zero_errors"] is True
    assert targets["met"] is True


def test_a_miss_is_reported_as_a_miss() -> None:
    policies = shoot_out()
    policies[4]["figures"]["mean_s"] = 0.017  # 17/18 = 0.94 > 0.85
    targets = aggregate.compare(policies)["targets"]
    assert targets["mean_met"] is False
    assert targets["met"] is False
    text = aggregate.markdown(
        {"policies": policies, "comparison": aggregate.compare(policies), "slo_p95_s": 0.15}
    )
    assert "mean <= 0.85x: MISSED" in text


def test_without_predicted_the_targets_are_not_assessed() -> None:
    policies = [p for p in shoot_out() if not p["predictive"]]
    comparison = aggregate.compare(policies)
    assert comparison["targets"]["met"] is None
    assert comparison["predicted_vs_oracle"] is None


def test_markdown_table_has_a_row_per_policy_and_the_predicted_details() -> None:
    policies = shoot_out()
    text = aggregate.markdown(
        {"policies": policies, "comparison": aggregate.compare(policies), "slo_p95_s": 0.15}
    )
    lines = text.splitlines()
    assert lines[0] == aggregate.HEADER
    rows = [line for line in lines[2:] if line.startswith("| ")]
    assert len(rows) == len(policies)
    widths = {line.count("|") for line in lines[:2] + rows}
    assert widths == {12}  # every row has the header's 11 columns
    predicted_row = next(r for r in rows if r.startswith("| predicted |"))
    assert (
        "| 15.0 |" in predicted_row and "| 100.0 |" in predicted_row and "| 0.67x | 0.83x |" in predicted_row
    )
    assert "| NGINX least_conn | skipped: /usr/sbin/nginx not installed |" in text
    assert "live accuracy 0.810" in text and "ood 12" in text and "stale" not in text
    assert "decision delay mean 60 us = 0.40% of the mean RTT" in text
    assert "median <= 20 us (<= 0.27% of the median RTT), p99 <= 250 us" in text
    assert "answered from prediction tables 90%" in text
    assert "predicted / oracle: p99 1.25x, mean 1.50x." in text
    assert (
        "Best non-predictive policy: p99 150.0 ms (least_request), mean 18.0 ms (nginx_random_two)." in text
    )


def test_proxy_figures_from_a_real_prometheus_exposition() -> None:
    registry = CollectorRegistry()
    fallbacks = Counter("presage_fallbacks", "", ["reason"], registry=registry)
    decision = Histogram(
        "presage_decision_duration_seconds", "", buckets=(1e-4, 5e-4, 1e-3), registry=registry
    )
    accuracy = Gauge("presage_live_accuracy_ratio", "", registry=registry)
    fallbacks.labels("ood").inc(3)
    fallbacks.labels("stale").inc(1)
    for _ in range(98):
        decision.observe(5e-5)
    decision.observe(4e-4)
    decision.observe(4e-4)
    accuracy.set(0.83)
    from proxy.hedge import HedgeMetrics

    hedges = HedgeMetrics(registry)  # the proxy's own counter family
    hedges.sent.inc(4)
    hedges.won.inc(3)
    figures = proxy_figures(generate_latest(registry).decode())
    assert figures["hedges"] == {"denied": 0, "sent": 4, "won": 3}
    assert figures["live_accuracy"] == pytest.approx(0.83)
    assert figures["fallbacks"] == {"ood": 3, "stale": 1}
    assert figures["decisions"] == 100
    assert figures["fallback_share"] == pytest.approx(0.04)
    assert figures["decision_mean_s"] == pytest.approx((98 * 5e-5 + 2 * 4e-4) / 100)
    assert figures["decision_p50_le_s"] == pytest.approx(1e-4)
    assert figures["decision_p99_le_s"] == pytest.approx(5e-4)


def test_proxy_figures_of_a_proxy_without_prediction_metrics() -> None:
    figures = proxy_figures("# nothing here\n")
    assert (
        figures["live_accuracy"] is None and figures["decisions"] == 0 and figures["fallback_share"] is None
    )


def test_contenders_are_selected_by_name_in_table_order() -> None:
    assert [c.name for c in contenders.select("oracle,round_robin")] == ["round_robin", "oracle"]
    assert len(contenders.select(None)) == 9
    hedged = contenders.BY_NAME["predicted_hedged"]
    assert hedged.policy == "predicted" and hedged.predictive and "--hedge-after" in hedged.args
    with pytest.raises(ValueError, match="unknown bogus"):
        contenders.select("round_robin,bogus")


def test_compression_keeps_the_schedule_in_proportion() -> None:
    quick = load_scenario("quick")
    half = budget.compress(quick, 0.5)
    assert half.duration_s == pytest.approx(quick.duration_s / 2)
    assert half.trace.period_s == pytest.approx(quick.trace.period_s / 2)
    assert half.trace.low_rps == quick.trace.low_rps and half.sizes == quick.sizes
    for before, after in zip(quick.episodes, half.episodes, strict=True):
        assert after.start_s == pytest.approx(before.start_s / 2)
        assert after.duration_s == pytest.approx(before.duration_s / 2)
        assert (after.backend, after.kind, after.workers) == (before.backend, before.kind, before.workers)


def test_fit_compresses_only_what_does_not_fit() -> None:
    quick = load_scenario("quick")
    assert budget.fit(quick, None, 9, 12, 1) is quick
    assert budget.fit(quick, 10_000, 9, 12, 1) is quick
    fitted = budget.fit(quick, 170, 9, 12, 1)
    assert fitted.duration_s == pytest.approx(budget.fitted_duration_s(170, 9, 12, 1))
    assert fitted.duration_s < quick.duration_s


def _scaled(policies: list[dict[str, Any]], factor: float) -> list[dict[str, Any]]:
    """The same shoot-out on a machine ``factor`` times slower (every latency scaled)."""
    import copy

    out = copy.deepcopy(policies)
    for p in out:
        for key in ("mean_s", "p50_s", "p95_s", "p99_s"):
            if p.get("figures"):
                p["figures"][key] *= factor
    return out


def test_rounds_take_medians_of_figures_and_of_paired_ratios() -> None:
    rounds = [shoot_out(), _scaled(shoot_out(), 3.0), _scaled(shoot_out(), 0.5)]
    rounds[1][4]["figures"]["p99_s"] = 10.0  # predicted disturbed in one round only
    entries, comparison = aggregate.combine_rounds(rounds)
    by_name = {e["name"]: e for e in entries}
    assert [e["name"] for e in entries] == [p["name"] for p in shoot_out()]
    # figures: medians over rounds (x1, x3, x0.5 -> x1), counts summed over rounds
    assert by_name["least_request"]["figures"]["mean_s"] == pytest.approx(0.020)
    assert by_name["least_request"]["figures"]["count"] == 3000
    assert by_name["predicted"]["proxy"]["fallbacks"] == {"ood": 36, "stale": 0}
    assert all(isinstance(n, int) for n in by_name["predicted"]["proxy"]["fallbacks"].values())
    assert by_name["predicted"]["proxy"]["decisions"] == 3000
    assert by_name["predicted"]["proxy"]["fallback_share"] == pytest.approx(36 / 3000)
    assert by_name["predicted"]["proxy"]["live_accuracy"] == pytest.approx(0.81)
    # ratios: per round, then the median; one disturbed round does not move it
    assert comparison["ratios"]["predicted"]["p99_to_best"] == pytest.approx(100 / 150)
    assert comparison["ratio_range"]["predicted"]["p99_to_best"][1] == pytest.approx(10.0 / 0.45)
    assert comparison["ratios"]["predicted"]["mean_to_best"] == pytest.approx(15 / 18)
    assert comparison["targets"]["met"] is True and comparison["rounds"] == 3
    assert len(comparison["per_round"]) == 3
    assert by_name["nginx_least_conn"]["status"] == "skipped" and by_name["nginx_least_conn"]["rounds"] == 3
    text = aggregate.markdown({"policies": entries, "comparison": comparison, "slo_p95_s": 0.15})
    assert "Medians over 3 rounds" in text
    assert "| 0.67x [0.67-22.22] |" in text


def test_one_round_combines_to_the_single_run_comparison() -> None:
    entries, comparison = aggregate.combine_rounds([shoot_out()])
    single = aggregate.compare(shoot_out())
    assert comparison["ratios"] == single["ratios"] and comparison["targets"] == single["targets"]
    assert "Medians over" not in aggregate.markdown({"policies": entries, "comparison": comparison})


def test_a_policy_that_failed_in_any_round_is_reported_failed_and_errors_add_up() -> None:
    second = shoot_out()
    second[1] = {**second[1], "status": "failed", "reason": "did not start", "figures": None}
    second[4]["figures"]["errors"] = 2
    entries, comparison = aggregate.combine_rounds([shoot_out(), second])
    by_name = {e["name"]: e for e in entries}
    assert by_name["least_request"]["status"] == "failed"
    assert by_name["predicted"]["figures"]["errors"] == 2
    assert comparison["targets"]["zero_errors"] is False


def test_targets_judge_plain_predicted_even_when_the_hedged_variant_is_listed_first() -> None:
    policies = shoot_out()
    hedged = entry(
        "predicted_hedged", 1, 1, predictive=True, label="predicted + hedging",
        proxy={"live_accuracy": 0.8, "fallbacks": {}, "decisions": 1000, "hedges": {"sent": 40, "won": 30}},
    )  # fmt: skip
    policies.insert(0, hedged)
    comparison = aggregate.compare(policies)
    assert comparison["predicted_vs_oracle"] == {"p99": pytest.approx(1.25), "mean": pytest.approx(1.5)}
    assert comparison["targets"]["met"] is True  # predicted's own 0.67x / 0.83x, not the variant's
    text = aggregate.markdown({"policies": policies, "comparison": comparison})
    assert "predicted_hedged: live accuracy 0.800" in text and "hedged copies sent 40, won 30" in text
    assert "predicted: live accuracy 0.810" in text
