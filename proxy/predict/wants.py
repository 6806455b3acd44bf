"""Which configs need the prediction runtime. Kept free of numpy/onnxruntime imports so that a
proxy that only balances by a heuristic never loads them."""

from __future__ import annotations

from ..config import ProxyConfig


def uses_features(config: ProxyConfig) -> bool:
    """Whether this config needs the feature store (and so a Redis)."""
    return "predicted" in (config.policy, config.shadow) or bool(config.record or config.record_stream)


def needs_runtime(config: ProxyConfig) -> bool:
    return uses_features(config) or config.explore > 0
