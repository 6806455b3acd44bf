"""The kinds of work a testbed backend can do per request, by name (a scenario's ``work`` key).

``imaging`` (the default): band-pass filtering a micrograph movie, 2-D FFTs (``imaging``).
``checksum``: SHA-256 passes over an object's block (``checksum``). Both take the request's size
(an image side in pixels, ``imaging.MIN_SIDE``..``MAX_SIDE``) and a frame count (work units), and
return an ``imaging.WorkResult``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from loadtest.testbed import checksum, imaging


@dataclass(frozen=True, slots=True)
class WorkKind:
    run: Callable[[int, int, int], imaging.WorkResult]  # (side, frames, request number)
    prepare: Callable[[int], None]  # build the caches for a side before the first request
    measure_cpu_s: Callable[[int, int], float]  # service demand on an idle core (side, frames)


KINDS: dict[str, WorkKind] = {
    "imaging": WorkKind(imaging.filter_movie, imaging.prepare, imaging.measure_cpu_s),
    "checksum": WorkKind(checksum.checksum_object, checksum.prepare, checksum.measure_cpu_s),
}
DEFAULT_KIND = "imaging"


def kind(name: str) -> WorkKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown work kind {name!r} (known: {', '.join(KINDS)})") from None
