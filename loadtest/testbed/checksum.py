"""A second kind of testbed work: checksumming an object's blocks, as a storage front end does.

An object store verifies what it serves: each request hashes a block of the object with SHA-256
(S3's ``x-amz-checksum-sha256``, Ceph's deep scrub) before the bytes go out. A request here hashes
``frames`` passes over a block of ``side * side * BYTES_PER_PIXEL`` bytes, so its cost is linear in
``frames`` and in the square of ``side``, as the imaging work's is (without its log factor), and
the same ``size`` (128, 256, 512) and ``work_mult`` give requests of comparable length: at 256 and
one work unit (4 passes over 1.5 MiB) 4.4 ms of CPU on the testbed's VM (the least of five runs),
where a 256-px movie takes 4.3 ms (1.1 against 1.4 ms at 128, 17.7 against 13.7 ms at 512).

Why a second kind: the imaging work is memory- and cache-heavy (2-D FFTs over arrays of a few MiB),
and on a shared 2-vCPU VM its time for identical requests scatters, which bounds any RTT model of
the testbed. Streaming SHA-256 over one cached block is compute-bound and repeats. One backend
alone, identical sequential requests, no quota (``python -m loadtest.bench_scatter --work W
--sizes 128,256,512 --periods none --repeat 3``): the best constant's 1 - MAPE is 85.8 / 86.1 /
88.8 % at 128 / 256 / 512 px for the imaging work, 91.3 / 95.3 / 98.0 % for this one. A scenario
with ``work: checksum`` asks how close the predictor gets when the service time itself repeats. ``hashlib``
releases the GIL on large buffers, so a pool of threads uses several cores, as numpy's FFTs do.
"""

from __future__ import annotations

import hashlib
import threading
import time
from functools import lru_cache

from loadtest.testbed.imaging import WorkResult, check_side

BYTES_PER_PIXEL = 24  # bytes hashed per pixel and pass: 1.5 MiB a pass at 256 px

_cache_lock = threading.Lock()


@lru_cache(maxsize=64)
def _block(side: int) -> bytes:
    """The block for ``side``: deterministic bytes (the same in every process), built once."""
    n = side * side * BYTES_PER_PIXEL
    seed = hashlib.sha256(f"presage-block-{side}".encode()).digest()
    return (seed * (n // len(seed) + 1))[:n]


def prepare(side: int) -> None:
    """Build the block for ``side`` (once; a lock keeps two threads from building it twice)."""
    with _cache_lock:
        _block(check_side(side))


def checksum_object(side: int, frames: int, seq: int = 0) -> WorkResult:
    """Hash ``frames`` passes over the block of ``side``; ``picks`` is the digest's first byte.
    ``seq`` is the request's number (the imaging work seeds its drift with it); it salts each
    pass so that no two requests hash the same stream."""
    prepare(side)
    start = time.thread_time()
    block = memoryview(_block(side))
    digest = b""
    for f in range(max(1, frames)):
        h = hashlib.sha256(f"{seq}:{f}".encode())
        h.update(block)
        digest = h.digest()
    return WorkResult(side, frames, digest[0], time.thread_time() - start)


def measure_cpu_s(side: int, frames: int, repeats: int = 3) -> float:
    """Smallest CPU time of ``repeats`` runs: the service demand on an idle core, for the oracle."""
    prepare(side)
    return min(checksum_object(side, frames, i).cpu_s for i in range(max(1, repeats)))
