"""The work a testbed backend does per request: band-pass filtering a short electron-microscopy movie.

A cryo-EM movie is a stack of noisy frames of one field of view that drifts slightly from frame to
frame. Pre-processing (MotionCor2, Zheng et al., Nat. Methods 2017; Relion's motion correction)
shifts each frame back, filters it in Fourier space and averages the frames; particle picking then
thresholds the band-passed average (a difference-of-Gaussians filter, Voss et al., J. Struct.
Biol. 2009, "DoG Picker"). A request here runs that pipeline on a synthetic micrograph:

    for each of F frames:  X_f = rfft2(roll(image, drift_f));  Y += irfft2(X_f * H)
    picks = count(Y > mean(Y) + 3 std(Y))

with ``H`` a Gaussian band-pass (DoG) transfer function. The cost of one frame is one forward and
one inverse 2-D real FFT of an N x N image, O(N^2 log N), so the image side ``N`` is the request's
*size* and the frame count ``F = max(1, round(FRAMES_PER_MULT * work_mult))`` scales the work
linearly. numpy's pocketfft releases the GIL, so a pool of threads uses several cores.

The micrograph (Gaussian "particles" on noise) and the filter are built once per side and cached,
so a request costs FFTs, not random-number generation.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MIN_SIDE = 16
MAX_SIDE = 1024
DEFAULT_SIDE = 256
FRAMES_PER_MULT = 4  # frames per request at work_mult 1.0; the medium request (256 px) is ~5 ms of CPU
_SEED = 20240611  # the synthetic micrograph is the same in every process


@dataclass(frozen=True, slots=True)
class WorkResult:
    side: int
    frames: int
    picks: int  # pixels of the band-passed average above mean + 3 std
    cpu_s: float  # CPU time of the worker thread for this request (time.thread_time)


def frames_for(work_mult: float) -> int:
    """Frames per request at ``work_mult``: linear in the multiplier, resolution 1/FRAMES_PER_MULT."""
    return max(1, round(FRAMES_PER_MULT * work_mult))


def work_units(side: int, frames: int) -> float:
    """Relative cost model of one request: ``frames * N^2 log2 N``, normalised to 256 px, 1 frame."""
    return frames * side * side * math.log2(side) / (256 * 256 * 8)


def check_side(side: int) -> int:
    if not MIN_SIDE <= side <= MAX_SIDE:
        raise ValueError(f"must be an image side in {MIN_SIDE}..{MAX_SIDE} pixels (got {side})")
    return side


_cache_lock = threading.Lock()


@lru_cache(maxsize=64)
def _micrograph(side: int) -> np.ndarray:
    """Gaussian blobs of radius ~side/40 on unit noise, float32; read-only (shared by threads)."""
    rng = np.random.default_rng(_SEED + side)
    img = rng.standard_normal((side, side)).astype(np.float32)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    sigma = max(1.0, side / 40.0)
    for cy, cx in rng.uniform(0, side, size=(max(4, side // 16), 2)):
        img += 3.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * sigma * sigma))
    img.setflags(write=False)
    return img


@lru_cache(maxsize=64)
def _bandpass(side: int) -> np.ndarray:
    """DoG transfer function on the rfft2 grid: exp(-f^2/2 s_hi^2) - exp(-f^2/2 s_lo^2)."""
    fy = np.fft.fftfreq(side).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(side).astype(np.float32)[None, :]
    f2 = fy * fy + fx * fx
    s_hi, s_lo = 0.25, 0.01  # cycles/pixel: keep particle-sized features, drop pixel noise and ramps
    h = np.exp(-f2 / (2 * s_hi * s_hi)) - np.exp(-f2 / (2 * s_lo * s_lo))
    h = h.astype(np.float32)
    h.setflags(write=False)
    return h


def prepare(side: int) -> None:
    """Build the caches for ``side`` (done once; a lock keeps two threads from building both)."""
    with _cache_lock:
        _micrograph(check_side(side))
        _bandpass(side)


def filter_movie(side: int, frames: int, drift_seed: int = 0) -> WorkResult:
    """Run the pipeline of the module docstring; thread-safe, the caches are read-only."""
    prepare(side)
    start = time.thread_time()
    img, h = _micrograph(side), _bandpass(side)
    rng = np.random.default_rng(drift_seed)
    acc = np.zeros((side, side), dtype=np.float32)
    for dy, dx in rng.integers(-3, 4, size=(frames, 2)):
        spectrum = np.fft.rfft2(np.roll(img, (int(dy), int(dx)), axis=(0, 1)))
        spectrum *= h
        acc += np.fft.irfft2(spectrum, s=(side, side))
    threshold = acc.mean() + 3.0 * acc.std()
    picks = int(np.count_nonzero(acc > threshold))
    return WorkResult(side, frames, picks, time.thread_time() - start)


def measure_cpu_s(side: int, frames: int, repeats: int = 3) -> float:
    """Smallest CPU time of ``repeats`` runs: the service demand on an idle core, for the oracle."""
    prepare(side)
    return min(filter_movie(side, frames, i).cpu_s for i in range(max(1, repeats)))
