"""Per-policy figures, the comparison against the best non-predictive policy, and the markdown table.

A policy's entry (JSON-ready)::

    {"name", "label", "family": "presage" | "external" | "reference", "predictive": bool,
     "status": "measured" | "skipped" | "failed", "reason": str | None,
     "figures": {count, ok, errors, dropped, achieved_rps, mean_s, p50_s, p95_s, p99_s,
                 slo_breach_share, backend_share, windows},
     "proxy": {live_accuracy, fallbacks, decision_mean_s, ...} | None}

The baseline of the ratios is the best *non-predictive* policy: every measured policy except
``predicted`` and the oracle (a reference no real balancer can be), and except those that failed
more than ``MAX_BASELINE_ERROR_SHARE`` of their requests (a policy that drops the slow requests
would otherwise look fast). The best p99 and the best mean may come from different policies; each
ratio uses its own best, which is the strictest reading of "best other policy".
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

TARGET_P99_RATIO = 0.7  # issue 6: predicted p99 <= 0.7 x the best other policy
TARGET_MEAN_RATIO = 0.85  # and mean <= 0.85 x
MAX_BASELINE_ERROR_SHARE = 0.01
FIGURE_KEYS = (
    "count", "ok", "errors", "dropped", "achieved_rps", "offered_rps", "mean_s", "p50_s", "p95_s", "p99_s",
    "max_s", "lag_p99_s", "slo_p95_s", "slo_breach_share", "backend_share", "windows",
)  # fmt: skip


def figures(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of ``LoadResult.summary`` the bench keeps per policy."""
    return {key: summary.get(key) for key in FIGURE_KEYS}


def error_share(entry: Mapping[str, Any]) -> float:
    fig = entry.get("figures") or {}
    count = fig.get("count") or 0
    return ((fig.get("errors") or 0) + (fig.get("dropped") or 0)) / count if count else 1.0


def is_baseline(entry: Mapping[str, Any]) -> bool:
    return (
        entry.get("status") == "measured"
        and not entry.get("predictive")
        and entry.get("family") != "reference"
        and error_share(entry) <= MAX_BASELINE_ERROR_SHARE
    )


def best_baseline(policies: Sequence[Mapping[str, Any]], key: str) -> Mapping[str, Any] | None:
    """The baseline policy with the lowest ``figures[key]`` (``None`` when there is none)."""
    candidates = [p for p in policies if is_baseline(p) and p["figures"].get(key) is not None]
    return min(candidates, key=lambda p: p["figures"][key], default=None)


def compare(policies: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Best baselines, every policy's ratios to them, predicted/oracle and the targets' verdict."""
    best = {key: best_baseline(policies, key) for key in ("p99_s", "mean_s")}
    ratios = {
        p["name"]: {f"{key[:-2]}_to_best": _ratio(p, best[key], key) for key in ("p99_s", "mean_s")}
        for p in policies
        if p.get("status") == "measured"
    }
    predicted = _predicted(policies)
    oracle = _find(policies, family="reference")
    vs_oracle = None
    if predicted is not None and oracle is not None:
        vs_oracle = {key[:-2]: _ratio(predicted, oracle, key) for key in ("p99_s", "mean_s")}
    return {
        "best": {
            key[:-2]: None if b is None else {"policy": b["name"], "value_s": b["figures"][key]}
            for key, b in best.items()
        },
        "ratios": ratios,
        "predicted_vs_oracle": vs_oracle,
        "targets": _targets(predicted, ratios),
    }


# -- rounds --------------------------------------------------------------------------------------------
# ``presage bench --rounds R`` runs every contender R times, in an order rotated each round, on the
# same arrivals and interference schedule. On a shared 2-core machine one run's outside load moves a
# policy's mean by more than the policies differ (HAProxy's mean went from 23 to 75 ms between two
# identical runs), so a single run cannot rank them. A round is a set of runs close together in
# time, which see similar outside load: the ratio of two policies *within* a round is paired, and
# its median over rounds is what the table and the verdict use. Figures are medians over rounds;
# counts (requests, errors, drops, fallbacks) are totals, so "zero errors" means zero in every run.
_SUMMED = frozenset({"count", "ok", "errors", "dropped", "decisions", "table_hits"})


def combine_rounds(
    rounds: Sequence[Sequence[Mapping[str, Any]]],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Entries with median figures over ``rounds`` (each a list of entries, one per contender, in
    table order) and the comparison built on per-round ratios."""
    if not rounds:
        raise ValueError("no rounds to combine")
    per_round = [compare(r) for r in rounds]
    entries = []
    for first in rounds[0]:
        name = first["name"]
        same = [e for r in rounds for e in r if e["name"] == name]
        measured = [e for e in same if e.get("status") == "measured"]
        entry = dict(first)
        if len(measured) < len(same):  # a contender that failed once is reported as failed
            failed = next(e for e in same if e.get("status") != "measured")
            entry.update(status=failed.get("status"), reason=failed.get("reason"))
        elif measured:
            entry["figures"] = _median_mapping([e["figures"] for e in measured])
            proxies = [e["proxy"] for e in measured if e.get("proxy")]
            entry["proxy"] = _median_mapping(proxies) if proxies else None
            proxy = entry["proxy"]
            if proxy and proxy.get("decisions"):  # a share of the totals, beside the totals
                proxy["fallback_share"] = sum((proxy.get("fallbacks") or {}).values()) / proxy["decisions"]
            entry["episodes"] = measured[0].get("episodes")
            machine = [e["machine"] for e in measured if e.get("machine")]
            entry["machine"] = max(machine, key=lambda m: m.get("foreign_cores", 0.0)) if machine else None
        entry["rounds"] = len(same)
        entries.append(entry)
    comparison = compare(entries)  # best baselines by median figures, for the notes
    ratios: dict[str, dict[str, float | None]] = {}
    spread: dict[str, dict[str, list[float]]] = {}
    for e in entries:
        if e.get("status") != "measured":
            continue
        name = e["name"]
        ratios[name], spread[name] = {}, {}
        for key in ("p99_to_best", "mean_to_best"):
            values = [float(v) for c in per_round if (v := c["ratios"].get(name, {}).get(key)) is not None]
            ratios[name][key] = statistics.median(values) if values else None
            spread[name][key] = [min(values), max(values)] if values else []
    comparison["ratios"] = ratios
    comparison["ratio_range"] = spread
    vs = [c["predicted_vs_oracle"] for c in per_round if c.get("predicted_vs_oracle")]
    comparison["predicted_vs_oracle"] = (
        {k: _median_or_none([v[k] for v in vs]) for k in ("p99", "mean")} if vs else None
    )
    comparison["targets"] = _targets(_predicted(entries), ratios)
    comparison["rounds"] = len(rounds)
    comparison["per_round"] = [{"best": c["best"], "ratios": c["ratios"]} for c in per_round]
    return entries, comparison


def _median_or_none(values: Sequence[float | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.median(present) if present else None


def _median_mapping(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Key by key: numbers -> median (totals for counts), mappings -> the same recursively (totals
    for counters such as fallbacks by reason), anything else -> the first round's value."""
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [item.get(key) for item in items]
        first = next((v for v in values if v is not None), None)
        if isinstance(first, bool) or first is None:
            out[key] = first
        elif isinstance(first, int | float):
            nums = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
            if key in _SUMMED:
                out[key] = type(first)(sum(nums))
            else:
                out[key] = statistics.median(nums) if nums else None
        elif isinstance(first, Mapping) and key in ("fallbacks", "ood_features", "hedges"):
            totals: dict[str, int] = {}
            for v in values:
                for k, n in (v or {}).items():
                    totals[k] = totals.get(k, 0) + int(n)
            out[key] = totals
        elif isinstance(first, Mapping) and all(isinstance(v, int | float) for v in first.values()):
            out[key] = _median_mapping([v for v in values if isinstance(v, Mapping)])
        else:
            out[key] = first
    return out


def _targets(predicted: Mapping[str, Any] | None, ratios: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"p99_ratio_max": TARGET_P99_RATIO, "mean_ratio_max": TARGET_MEAN_RATIO}
    if predicted is None or predicted["name"] not in ratios:
        return {**out, "p99_met": None, "mean_met": None, "zero_errors": None, "met": None}
    r = ratios[predicted["name"]]
    p99_met = None if r["p99_to_best"] is None else r["p99_to_best"] <= TARGET_P99_RATIO
    mean_met = None if r["mean_to_best"] is None else r["mean_to_best"] <= TARGET_MEAN_RATIO
    zero = error_share(predicted) == 0.0
    met = None if p99_met is None or mean_met is None else (p99_met and mean_met and zero)
    return {**out, "p99_met": p99_met, "mean_met": mean_met, "zero_errors": zero, "met": met}


def _ratio(entry: Mapping[str, Any], base: Mapping[str, Any] | None, key: str) -> float | None:
    if base is None or entry.get("status") != "measured":
        return None
    num, den = entry["figures"].get(key), base["figures"].get(key)
    if num is None or not den:
        return None
    return float(num) / float(den)


def _predicted(policies: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The policy the targets are judged on: plain ``predicted`` (not a variant such as the hedged
    one, whose copies add load no other contender adds), else the first predictive one measured."""
    return _find(policies, name="predicted") or _find(policies, predictive=True)


def _find(policies: Sequence[Mapping[str, Any]], **match: Any) -> Mapping[str, Any] | None:
    for p in policies:
        if p.get("status") == "measured" and all(p.get(k) == v for k, v in match.items()):
            return p
    return None


# -- markdown ----------------------------------------------------------------------------------------

HEADER = (
    "| policy | req/s | errors | dropped | mean ms | p50 ms | p95 ms | p99 ms | SLO-breach windows "
    "| p99 / best | mean / best |"
)


def markdown(results: Mapping[str, Any]) -> str:
    """The results table and the lines under it (what ``results.md`` holds and the CLI prints)."""
    policies: Sequence[Mapping[str, Any]] = results["policies"]
    comparison: Mapping[str, Any] = results["comparison"]
    lines = []
    rounds = comparison.get("rounds", 1)
    if rounds > 1:
        lines += [
            f"Medians over {rounds} rounds (every policy once per round, order rotated); the ratio "
            "columns are medians of the per-round ratios, [min-max] across rounds.",
            "",
        ]
    lines += [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    for p in policies:
        lines.append(
            _row(p, comparison["ratios"].get(p["name"]), comparison.get("ratio_range", {}).get(p["name"]))
        )
    lines.append("")
    lines += _notes(policies, comparison, results.get("slo_p95_s"))
    return "\n".join(lines) + "\n"


def _row(
    p: Mapping[str, Any],
    ratios: Mapping[str, Any] | None,
    ranges: Mapping[str, Sequence[float]] | None = None,
) -> str:
    label = p.get("label") or p["name"]
    if p.get("status") != "measured":
        return f"| {label} | {p.get('status')}: {p.get('reason') or '-'} |" + " |" * 9
    f = p["figures"]
    cells = [
        label,
        f"{f['achieved_rps']:.1f}",
        str(f["errors"]),
        str(f["dropped"]),
        *(_ms(f.get(k)) for k in ("mean_s", "p50_s", "p95_s", "p99_s")),
        _share(f.get("slo_breach_share")),
        _x(ratios and ratios.get("p99_to_best")) + _range(ranges, "p99_to_best"),
        _x(ratios and ratios.get("mean_to_best")) + _range(ranges, "mean_to_best"),
    ]
    return "| " + " | ".join(cells) + " |"


def _notes(
    policies: Sequence[Mapping[str, Any]], comparison: Mapping[str, Any], slo: float | None
) -> list[str]:
    out = []
    if slo is not None:
        out.append(
            f"SLO: p95 <= {slo * 1000:.0f} ms per 10-s window (failed requests count as infinitely slow)."
        )
    best = comparison["best"]
    if best.get("p99") and best.get("mean"):
        out.append(
            f"Best non-predictive policy: p99 {_ms(best['p99']['value_s'])} ms ({best['p99']['policy']}), "
            f"mean {_ms(best['mean']['value_s'])} ms ({best['mean']['policy']})."
        )
    for p in policies:
        if p.get("predictive") and p.get("status") == "measured" and p.get("proxy"):
            out.append(_predicted_line(p))
    vs = comparison.get("predicted_vs_oracle")
    if vs:
        out.append(f"predicted / oracle: p99 {_x(vs['p99'])}, mean {_x(vs['mean'])}.")
    out.append(_verdict(comparison["targets"]))
    out += _episode_notes(policies)
    out += _machine_notes(policies)
    for p in policies:
        if p.get("status") != "measured":
            out.append(f"{p.get('label') or p['name']}: {p.get('status')} ({p.get('reason')}).")
    return out


def _episode_notes(policies: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line on the noisy neighbours: whether every scheduled episode ran in every run."""
    runs = [p for p in policies if p.get("status") == "measured" and p.get("episodes") is not None]
    if not runs:
        return []
    missed = sorted(
        {
            f"{e['backend']}:{e['kind']} {e['status']}"
            for p in runs
            for e in p["episodes"]
            if e["status"] not in ("done", "running")
        }
    )
    total = len(runs[0]["episodes"])
    if not missed:
        return [f"Interference: all {total} episodes ran in each of the {len(runs)} runs."]
    return [f"Interference: not every episode ran: {'; '.join(missed)}."]


BUSY_MACHINE_CORES = 0.25  # other processes above this share of a core make runs incomparable


def _machine_notes(policies: Sequence[Mapping[str, Any]]) -> list[str]:
    """Whether other processes competed for the CPU during the runs (see ``machine.py``)."""
    used = {p["name"]: p["machine"]["foreign_cores"] for p in policies if (p.get("machine") or {})}
    if not used:
        return []
    worst = max(used, key=lambda name: used[name])
    text = (
        f"Other processes on this machine used {min(used.values()):.2f}-{used[worst]:.2f} cores during "
        f"the runs (most during {worst})"
    )
    if used[worst] > BUSY_MACHINE_CORES:
        return [text + ": a busy machine; these figures compare policies under different outside load."]
    return [text + "."]


def _predicted_line(p: Mapping[str, Any]) -> str:
    proxy = p["proxy"]
    acc = proxy.get("live_accuracy")
    fallbacks = proxy.get("fallbacks") or {}
    fb = ", ".join(f"{k} {v}" for k, v in fallbacks.items() if v) or "none"
    share = proxy.get("fallback_share")
    text = f"{p['name']}: live accuracy {'-' if acc is None else f'{acc:.3f}'}; fallbacks {fb}"
    if share is not None:
        text += f" ({share:.1%} of {proxy.get('decisions', 0)} decisions)"
    mean_d, mean_rtt = proxy.get("decision_mean_s"), p["figures"].get("mean_s")
    if mean_d is not None:
        text += f"; decision delay mean {mean_d * 1e6:.0f} us"
        if mean_rtt:
            text += f" = {mean_d / mean_rtt:.2%} of the mean RTT"
    p50, p99 = proxy.get("decision_p50_le_s"), proxy.get("decision_p99_le_s")
    median_rtt = p["figures"].get("p50_s")
    if p50 is not None:
        text += f", median <= {p50 * 1e6:.0f} us"
        if median_rtt:
            text += f" (<= {p50 / median_rtt:.2%} of the median RTT)"
    if p99 is not None:
        text += f", p99 <= {p99 * 1e6:.0f} us"
    hits = proxy.get("table_hits")
    if hits is not None and proxy.get("decisions"):
        text += f"; answered from prediction tables {hits / proxy['decisions']:.0%}"
    hedges = proxy.get("hedges") or {}
    if hedges:
        text += "; hedged copies " + ", ".join(f"{k} {v}" for k, v in hedges.items())
    ood = proxy.get("ood_features") or {}
    if ood:
        text += "; inputs out of the training range: " + ", ".join(
            f"{k} {v}" for k, v in list(ood.items())[:5]
        )
    return text + "."


def _verdict(t: Mapping[str, Any]) -> str:
    if t.get("met") is None:
        return "Targets (predicted p99 <= 0.7x, mean <= 0.85x the best other policy): not assessed."

    def word(ok: bool | None) -> str:
        return "met" if ok else "MISSED"

    return (
        f"Targets: p99 <= {t['p99_ratio_max']}x best other: {word(t['p99_met'])}; "
        f"mean <= {t['mean_ratio_max']}x: {word(t['mean_met'])}; zero errors: {word(t['zero_errors'])}."
    )


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.1f}"


def _share(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _range(ranges: Mapping[str, Sequence[float]] | None, key: str) -> str:
    span = (ranges or {}).get(key) or []
    return f" [{span[0]:.2f}-{span[1]:.2f}]" if len(span) == 2 and span[0] != span[1] else ""


def _x(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"
