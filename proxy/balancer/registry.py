"""Policies by name (Traefik's per-strategy packages chosen from a table; uvicorn's
``HTTP_PROTOCOLS``).

The table maps a name to ``"module:Class"`` and imports lazily: the CLI can list and validate
names without importing numpy/onnxruntime for ``predicted``, and a policy whose module fails to
import is reported by name without breaking the others.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Policy

POLICIES: dict[str, str] = {
    "round_robin": "proxy.balancer.round_robin:RoundRobinPolicy",
    "random": "proxy.balancer.random_pick:RandomPolicy",
    "least_request": "proxy.balancer.least_request:LeastRequestPolicy",
    "peak_ewma": "proxy.balancer.peak_ewma:PeakEwmaPolicy",
    "predicted": "proxy.balancer.predicted:PredictedPolicy",
}
POLICY_NAMES: tuple[str, ...] = tuple(POLICIES)


def policy_class(name: str) -> type:
    """The class registered under ``name``; ``ValueError`` names the policy on any failure."""
    # A name with a colon is a plugin, "module:Class": evaluation harnesses (e.g. the testbed's
    # oracle) plug in balancers that must never ship in the proxy itself.
    target = name if ":" in name else POLICIES.get(name)
    if target is None:
        known = ", ".join(POLICY_NAMES)
        raise ValueError(f"policy: unknown policy {name!r} (known: {known})")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"policy: {name!r} is unavailable ({target}: {exc})") from exc
    return cls  # type: ignore[no-any-return]


def make_policy(name: str, **options: Any) -> Policy:
    """A new policy instance (policies may keep state, e.g. round-robin counters: one per pool)."""
    cls = policy_class(name)
    try:
        policy: Policy = cls(**options)
    except TypeError as exc:
        raise ValueError(f"policy: {name!r} rejected its options: {exc}") from exc
    return policy
