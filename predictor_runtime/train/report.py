"""The training report: ``report.md`` plus PNG plots (matplotlib, Agg backend: no display needed).

Plots: accuracy vs inference time for every candidate (with the budget line), predicted vs
observed RTT on the test split for the selected model, and feature correlations with RTT.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .pipeline import ACCURACY_TIE, SPEARMAN_TIE, Candidate, TrainResult


def write_report(result: TrainResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _plots(result, out)
    (out / "report.md").write_text(render_markdown(result), encoding="utf-8")


def _us(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e6:.1f}"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.2f}%"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def render_markdown(r: TrainResult) -> str:
    ds, sp, sel = r.dataset, r.split, r.selected
    lines = [
        "# Presage model report",
        "",
        f"Selected: **{sel.family}**, test accuracy {_pct(sel.test['accuracy'])} (1 - MAPE on the latest "
        f"{len(sp.test)} samples), decision p99 {_us(sel.inference['p99_s'])} µs at batch "
        f"{len(ds.backends)} — "
        f"budget {_us(r.budget_s)} µs ({r.options.budget_frac:.1%} of the median RTT "
        f"{r.median_rtt_s * 1e3:.2f} ms): {'fits' if sel.fits_budget else '**over budget**'}.",
        "",
        f"Its predictions are scaled by {sel.scale:.3f}, the MAPE-optimal level fitted on the validation "
        f"split; unscaled (the fit's median) its test accuracy is {_pct(sel.test_unscaled_accuracy)}. "
        f"The scale does not change which backend ranks first; the rank correlation of prediction and "
        f"RTT on the test split (Spearman) is {sel.test.get('spearman', 0.0):.3f}.",
        "",
        *_table_note(r),
        *_noise(r),
        "## Data",
        "",
        f"- samples read: {ds.n_read}; used: {len(ds)}; backends: {', '.join(ds.backends)}; "
        f"exploration share {ds.explore.mean():.1%}",
        f"- dropped: {', '.join(f'{k}: {v}' for k, v in sorted(ds.dropped.items())) or 'none'} "
        "(status 0 and >= 500 are not RTTs of served requests)",
        f"- time: {_when(ds.ts[0])} → {_when(ds.ts[-1])}",
        f"- split by time: train {len(sp.train)}, validate {len(sp.val)}, test {len(sp.test)} (latest)",
    ]
    if r.balanced is not None:
        b = r.balanced
        lines.append(
            f"- balanced by RTT bins (Freedman-Diaconis on log RTT, {len(b.counts_before)} bins, "
            f"cap {b.cap}): "
            f"{int(b.counts_before.sum())} → {int(b.counts_after.sum())} training rows"
        )
    lines += ["", *_candidates_table(r), "", *_per_backend(r), "", *_features(r), ""]
    lines += [
        "## Plots",
        "",
        "![accuracy vs inference time](accuracy_vs_time.png)",
        "![predicted vs observed](predicted_vs_observed.png)",
        "![feature correlations](feature_correlations.png)",
        "",
        "Inference times were measured with onnxruntime on this machine at training time; they move "
        "with the machine and its load.",
        "",
    ]
    return "\n".join(lines)


def _noise(r: TrainResult) -> list[str]:
    n = r.noise
    if not n or not n.get("rows"):
        return []
    return [
        f"Noise check: predicting every test request by the best constant for its backend, request "
        f"class and in-flight count (fitted on those very requests, {int(n['rows'])} rows in "
        f"{int(n['cells'])} cells) scores {_pct(n['accuracy'])}: requests that look the same to "
        "these inputs differ that much in RTT, which bounds what any model of them can reach.",
        "",
    ]


def _candidates_table(r: TrainResult) -> list[str]:
    rows = [
        "## Candidates",
        "",
        "Chosen by validation accuracy among models whose p99 fits the budget; figures below are on the "
        "test split unless marked.",
        "",
        "| family | val accuracy | accuracy | unscaled | scale | Spearman | MAE ms | p95 APE | R² "
        "| p50 µs | p99 µs | fits | parity |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in r.candidates:
        rows.append(_candidate_row(c, c is r.selected))
    return rows


def _candidate_row(c: Candidate, selected: bool) -> str:
    name = f"**{c.family}**" if selected else c.family
    parity = f"max rel {c.parity.max_rel_error:.1e}" if c.parity else f"failed: {c.error}"
    t = c.test
    return (
        f"| {name} | {_pct(c.val.get('accuracy'))} | {_pct(t.get('accuracy'))} "
        f"| {_pct(c.test_unscaled_accuracy)} | {c.scale:.3f} | {t.get('spearman', 0.0):.3f} "
        f"| {t.get('mae_s', 0) * 1e3:.3f} | {_pct(t.get('p95_ape'))} | {t.get('r2', 0):.3f} "
        f"| {_us(c.inference.get('p50_s'))} "
        f"| {_us(c.inference.get('p99_s'))} | {'yes' if c.fits_budget else 'no'} | {parity} |"
    )


def _per_backend(r: TrainResult) -> list[str]:
    pb = r.per_backend
    lines = ["## Global vs per-backend models", ""]
    if "global_accuracy" not in pb:
        return [*lines, f"Not compared: {pb.get('note', 'disabled')}."]
    winner = "global" if pb["global_accuracy"] >= pb["per_backend_accuracy"] else "per-backend"
    lines += [
        f"Family {pb['family']}, {pb['rows']} test rows: global model with backend one-hot inputs "
        f"{_pct(pb['global_accuracy'])}, one model per backend {_pct(pb['per_backend_accuracy'])} "
        f"({winner} is better). The bundle holds the global model: one graph, one call per decision.",
        "",
        "| backend | per-backend accuracy |",
        "|---|---|",
    ]
    lines += [f"| {b} | {_pct(acc)} |" for b, acc in pb["by_backend"].items()]
    return lines


def _table_note(r: TrainResult) -> list[str]:
    """What the table floor says about the selection (nothing when it was left out)."""
    table = next((c for c in r.candidates if c.family == "table"), None)
    if table is None or table.error is not None:
        return []
    if r.selected is table:
        what = (
            "No learned model beat the per-cell table on validation by more than "
            f"{100 * ACCURACY_TIE:.0f} point, so the table ships: the MAPE-optimal constant per backend, "
            f"request class and in-flight count; its inputs: {', '.join(table.features)}."
        )
    elif table.outranked_by is not None:  # left out by ``_select``, whatever its accuracy
        scored = "was more accurate" if table.val["accuracy"] > r.selected.val["accuracy"] else "scored"
        what = (
            f"The per-cell table (the MAPE-optimal constant per backend, request class and in-flight "
            f"count) {scored} on validation ({_pct(table.val['accuracy'])} against "
            f"{_pct(r.selected.val['accuracy'])}) but ordered backends worse: Spearman "
            f"{table.val.get('spearman', float('nan')):.3f} against the best learned model's "
            f"{table.outranked_by:.3f}, more than {SPEARMAN_TIE} below, and routing needs the order: "
            "it is no floor here."
        )
    elif r.selected.val["accuracy"] >= table.val["accuracy"]:
        what = (
            f"It beat the per-cell table (the MAPE-optimal constant per backend, request class and "
            f"in-flight count) on validation: {_pct(r.selected.val['accuracy'])} against "
            f"{_pct(table.val['accuracy'])}."
        )
    else:  # ``_select``'s other filters: it must beat predicting the mean and fit the budget
        why = (
            f"it does not beat predicting the mean there (R2 {table.val.get('r2', float('nan')):.3f})"
            if float(table.val.get("r2", 0.0)) <= 0.0
            else "its decision time does not fit the budget"
        )
        what = (
            f"The per-cell table scored {_pct(table.val['accuracy'])} on validation against "
            f"{_pct(r.selected.val['accuracy'])}, but was left out: {why}."
        )
    return [what, ""]


def _per_decision_note(r: TrainResult) -> list[str]:
    """Whether inputs that rule out prediction tables were among the top k, and what became of them."""
    info = r.per_decision
    if not info:
        return []
    names = ", ".join(info["inputs"])
    if not info["fits_budget"]:
        verdict = (
            f"dropped: a decision that calls the model costs about {_us(info['scored_decision_s'])} µs "
            f"in a busy proxy, over the budget of {_us(info['budget_s'])} µs; without them the proxy "
            "answers from prediction tables"
        )
    elif info["dropped"]:
        verdict = (
            "dropped: the probe lost no more than the tie without them, and a model without them is "
            "answered from prediction tables (a few µs a decision) instead of a model call per decision"
        )
    else:
        verdict = "kept: the probe loses more than the tie without them, worth a model call per decision"
    return [
        f"{names} ranked in the top k; validation accuracy of the probe with them "
        f"{_pct(info['with'])}, without {_pct(info['without'])}: {verdict}.",
        "",
    ]


def _features(r: TrainResult) -> list[str]:
    lines = [
        "## Features",
        "",
        f"k = {r.k} chosen on validation accuracy of a probe LightGBM: "
        + ", ".join(f"k={k}: {_pct(v)}" for k, v in sorted(r.k_scores.items())),
        "",
        "Ranked by max(|Pearson|, |Spearman|) with RTT on the training rows; near-duplicates are "
        "|Pearson| > 0.98 with a better-ranked kept feature. The request's own features (status 'always') "
        "and the backend one-hot inputs are always kept.",
        "",
        *_per_decision_note(r),
        "| feature | Pearson | Spearman | status |",
        "|---|---|---|---|",
    ]
    shown = [f for f in r.ranking.features if f.status != "constant"][:40]
    lines += [f"| {f.name} | {f.pearson:+.3f} | {f.spearman:+.3f} | {f.status} |" for f in shown]
    constant = [f.name for f in r.ranking.features if f.status == "constant"]
    if constant:
        lines += ["", f"Constant, dropped ({len(constant)}): {', '.join(constant)}"]
    return lines


def _plots(r: TrainResult, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [c for c in r.candidates if c.error is None]
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in ok:
        ax.scatter(c.inference["p99_s"] * 1e6, c.test["accuracy"] * 100, s=60 if c is r.selected else 30)
        ax.annotate(c.family, (c.inference["p99_s"] * 1e6, c.test["accuracy"] * 100), xytext=(4, 4),
                    textcoords="offset points")  # fmt: skip
    ax.axvline(r.budget_s * 1e6, color="grey", linestyle="--", label="budget")
    ax.set(xlabel="p99 inference time (µs)", ylabel="test accuracy (%)", title="Accuracy vs inference time")
    ax.legend()
    _save(fig, out / "accuracy_vs_time.png")

    y = r.dataset.y[r.split.test] * 1e3
    assert r.selected.test_pred is not None
    p = r.selected.test_pred * 1e3
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y, p, s=4, alpha=0.4)
    hi = float(max(y.max(), p.max()))
    ax.plot([0, hi], [0, hi], color="grey", linewidth=1)
    ax.set(xlabel="observed RTT (ms)", ylabel="predicted RTT (ms)", title=f"{r.selected.family}: test split")
    _save(fig, out / "predicted_vs_observed.png")

    top = [f for f in r.ranking.features if f.status != "constant"][:20]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(top) + 1.5))
    pos = np.arange(len(top))
    ax.barh(pos - 0.2, [abs(f.pearson) for f in top], height=0.4, label="|Pearson|")
    ax.barh(pos + 0.2, [abs(f.spearman) for f in top], height=0.4, label="|Spearman|")
    labels = [f"{f.name}{'' if f.status in ('kept', 'always') else ' (not kept)'}" for f in top]
    ax.set_yticks(pos, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="correlation with RTT", title="Feature correlations (training rows)")
    ax.legend()
    _save(fig, out / "feature_correlations.png")


def _save(fig: object, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(path, dpi=90, bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
