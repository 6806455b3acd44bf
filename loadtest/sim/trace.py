"""Rate traces: the arrival rate over time, as a multiple of the scenario's rate.

A trace file is CSV, one step per line, ``t_s,scale``: from ``t_s`` seconds on, arrivals come at
``scale`` times the rate the scenario's ``load`` implies (so ``scale`` 1.2 is 20 % overload at load
1.0). Times are non-decreasing; the first scale also holds before the first time and the last one
forever after (it must be positive). ``#`` starts a comment; a header line ``t_s,scale`` may open
the file. Example, a burst::

    t_s,scale
    0,1.0
    20,1.5
    30,1.0
"""

from __future__ import annotations

import math
from pathlib import Path


class TraceError(ValueError):
    pass


def load_trace(path: str | Path) -> tuple[tuple[float, float], ...]:
    steps: list[tuple[float, float]] = []
    text = Path(path).read_text()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line or (not steps and line.replace(" ", "") == "t_s,scale"):
            continue
        steps.append(_parse_step(path, lineno, line))
        if len(steps) > 1 and steps[-1][0] < steps[-2][0]:
            raise TraceError(f"{path}:{lineno}: time goes backwards")
    if not steps:
        raise TraceError(f"{path}: no steps")
    if steps[-1][1] <= 0:
        raise TraceError(f"{path}: the last scale must be positive (it holds forever)")
    return tuple(steps)


def _parse_step(path: str | Path, lineno: int, line: str) -> tuple[float, float]:
    parts = [p.strip() for p in line.split(",")]
    try:
        t, scale = float(parts[0]), float(parts[1])
    except (IndexError, ValueError):
        raise TraceError(f"{path}:{lineno}: want 't_s,scale', got {line!r}") from None
    if len(parts) != 2 or not (math.isfinite(t) and math.isfinite(scale)) or t < 0 or scale < 0:
        raise TraceError(f"{path}:{lineno}: want two finite numbers >= 0, got {line!r}")
    return t, scale
