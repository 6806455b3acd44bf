"""What the bench reads from a Presage proxy's admin ``/metrics`` before stopping it.

The figures the issue asks for beside ``predicted``'s latency: live accuracy
(``presage_live_accuracy_ratio``, rolling 1 - MAPE), fallbacks by reason
(``presage_fallbacks_total{reason}``) and the decision delay (``presage_decision_duration_seconds``
histogram: mean = sum / count, and the upper bounds of the buckets holding the median and the
99th percentile, which is all a histogram can tell).
"""

from __future__ import annotations

import math
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def proxy_figures(text: str) -> dict[str, Any]:
    """Parse Prometheus text into the bench's figures; absent metrics give ``None``/empty."""
    accuracy: float | None = None
    fallbacks: dict[str, float] = {}
    buckets: list[tuple[float, float]] = []
    d_sum = d_count = 0.0
    requests = retries = 0.0
    hedges: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "presage_live_accuracy_ratio" and math.isfinite(value):
                accuracy = value if accuracy is None else min(accuracy, value)
            elif name == "presage_fallbacks_total":
                reason = labels.get("reason", "")
                fallbacks[reason] = fallbacks.get(reason, 0.0) + value
            elif name == "presage_decision_duration_seconds_bucket":
                buckets.append((float(labels["le"]), value))
            elif name == "presage_decision_duration_seconds_sum":
                d_sum += value
            elif name == "presage_decision_duration_seconds_count":
                d_count += value
            elif name == "presage_requests_total":
                requests += value
            elif name == "presage_retries_total":
                retries += value
            elif name == "presage_hedges_total":
                result = labels.get("result", "")
                hedges[result] = hedges.get(result, 0.0) + value
    decisions = int(d_count)
    return {
        "live_accuracy": accuracy,
        "fallbacks": {k: int(v) for k, v in sorted(fallbacks.items())},
        "fallback_share": (sum(fallbacks.values()) / decisions) if decisions else None,
        "decisions": decisions,
        "decision_mean_s": d_sum / d_count if d_count else None,
        "decision_p50_le_s": _bucket_quantile(buckets, 0.50),
        "decision_p99_le_s": _bucket_quantile(buckets, 0.99),
        "requests": int(requests),
        "retries": int(retries),
        "hedges": {k: int(v) for k, v in sorted(hedges.items())},
    }


def _bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Upper bound of the bucket where the cumulative count first reaches ``q`` of the total."""
    if not buckets:
        return None
    merged: dict[float, float] = {}
    for le, count in buckets:  # several workers' series add up bucket by bucket
        merged[le] = merged.get(le, 0.0) + count
    ordered = sorted(merged.items())
    total = ordered[-1][1]
    if total <= 0:
        return None
    for le, count in ordered:
        if count >= q * total:
            return le if math.isfinite(le) else None
    return None
