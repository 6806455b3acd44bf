"""The model bundle: a directory holding ``model.onnx`` and ``model.json``.

``model.json`` (format version ``BUNDLE_VERSION``) describes the ONNX graph completely enough for
the proxy to trust it without the training code: input names in order, the target and how to undo
its transform, the per-feature training ranges (for the out-of-distribution guard), the held-out
metrics, the measured inference time, and the sha256 of ``model.onnx``. Only ONNX is ever loaded
(no pickle): a bundle is data, never code.

Writers build the bundle in a temporary directory beside the target and rename it into place, so a
reader sees either the old bundle or the new one. Replacing an existing bundle uses Linux
``renameat2(RENAME_EXCHANGE)`` (one atomic swap of the two directories) where available. Readers
open the directory once and read both files relative to that handle, so a swap during a read
cannot pair the old ``model.json`` with the new ``model.onnx``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from metrics_agent.schema import AGGREGATES, BASE_METRICS

from .samples import LOCAL_FEATURES, REQUEST_FEATURES

BUNDLE_VERSION = 1
MODEL_FILE = "model.onnx"
META_FILE = "model.json"
INPUT_NAME = "features"
TRANSFORMS: tuple[str, ...] = ("identity", "log", "log1p")
_AGENT_NAME = re.compile(r"^(?P<metric>[a-z0-9_]+)(?:\.(?P<agg>[a-z]+)_(?P<w>[1-9][0-9]*)s)?$")


class BundleError(ValueError):
    """A bundle that must not serve; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class FeatureRange:
    """Training range of one input: the OOD guard's bounds come from ``min``/``max``."""

    min: float
    max: float
    p1: float
    p99: float

    def as_dict(self) -> dict[str, float]:
        return {"min": self.min, "max": self.max, "p1": self.p1, "p99": self.p99}


@dataclass(frozen=True, slots=True)
class Bundle:
    path: Path
    onnx: bytes = field(repr=False)  # the verified model bytes: sessions load these, not the file
    sha256: str
    feature_names: tuple[str, ...]
    target: str
    transform: str
    ranges: Mapping[str, FeatureRange]  # in ``feature_names`` order
    # a constant the inverse-transformed output is multiplied by (``target.scale``): the point
    # estimate that minimises MAPE is not the one a squared-error fit returns (see train.assess)
    scale: float
    metrics: Mapping[str, float]
    inference: Mapping[str, float]
    batch_size: int
    family: str
    created_at: str
    input_name: str
    training: Mapping[str, Any]
    meta: Mapping[str, Any] = field(repr=False)


def is_known_feature(name: str) -> bool:
    """Whether ``name`` follows the input naming of ``predictor_runtime.samples``."""
    if name in LOCAL_FEATURES or name in REQUEST_FEATURES:
        return True
    if name.startswith("backend="):
        return len(name) > len("backend=")
    m = _AGENT_NAME.match(name)
    if m is None:
        return False
    return m.group("metric") in BASE_METRICS and m.group("agg") in (None, *AGGREGATES)


# -- reading -------------------------------------------------------------------------------------


def load_bundle(path: str | Path) -> Bundle:
    """Read and validate a bundle; every problem raises ``BundleError`` naming it."""
    path = Path(path)
    meta_raw, onnx = _read_pair(path)
    try:
        meta = orjson.loads(meta_raw)
    except orjson.JSONDecodeError as exc:
        raise BundleError(f"{path / META_FILE}: not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise BundleError(f"{path / META_FILE}: not a JSON object")
    return _validate(path, meta, onnx)


def _read_pair(path: Path) -> tuple[bytes, bytes]:
    try:
        dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise BundleError(f"{path}: no such bundle directory") from None
    except NotADirectoryError:
        raise BundleError(f"{path}: not a directory (a bundle is a directory)") from None
    try:
        return _read_at(dir_fd, path, META_FILE), _read_at(dir_fd, path, MODEL_FILE)
    finally:
        os.close(dir_fd)


def _read_at(dir_fd: int, path: Path, name: str) -> bytes:
    try:
        fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    except FileNotFoundError:
        raise BundleError(f"{path}: missing {name}") from None
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def _require(path: Path, meta: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in meta:
        raise BundleError(f"{path / META_FILE}: missing key {key!r}")
    value = meta[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BundleError(f"{path / META_FILE}: {key!r} has the wrong type ({type(value).__name__})")
    return value


def _validate(path: Path, meta: dict[str, Any], onnx: bytes) -> Bundle:
    where = path / META_FILE
    version = meta.get("format_version")
    if version != BUNDLE_VERSION:
        raise BundleError(f"{where}: format_version {version!r}, this Presage reads {BUNDLE_VERSION}")
    sha = _require(path, meta, "sha256", str)
    actual = hashlib.sha256(onnx).hexdigest()
    if actual != sha:
        raise BundleError(f"{path / MODEL_FILE}: sha256 {actual[:16]}… does not match model.json {sha[:16]}…")
    names = _feature_names(path, _require(path, meta, "feature_names", list))
    target = _require(path, meta, "target", dict)
    transform = target.get("transform")
    if transform not in TRANSFORMS:
        raise BundleError(f"{where}: target transform {transform!r} (known: {', '.join(TRANSFORMS)})")
    scale = target.get("scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0.0 < scale < float("inf"):
        raise BundleError(f"{where}: target.scale must be a positive finite number, got {scale!r}")
    return Bundle(
        path=path,
        onnx=onnx,
        sha256=sha,
        feature_names=names,
        target=str(target.get("name", "rtt_s")),
        transform=transform,
        scale=float(scale),
        ranges=_ranges(path, names, _require(path, meta, "ranges", dict)),
        metrics=_numbers(path, "metrics", _require(path, meta, "metrics", dict)),
        inference=_numbers(path, "inference", _require(path, meta, "inference", dict)),
        batch_size=int(_require(path, meta, "batch_size", int)),
        family=str(_require(path, meta, "family", str)),
        created_at=str(_require(path, meta, "created_at", str)),
        input_name=str(meta.get("input_name", INPUT_NAME)),
        training=dict(meta.get("training", {})),
        meta=meta,
    )


def _feature_names(path: Path, raw: list[Any]) -> tuple[str, ...]:
    where = path / META_FILE
    if not raw:
        raise BundleError(f"{where}: feature_names is empty")
    if not all(isinstance(n, str) and n for n in raw):
        raise BundleError(f"{where}: feature_names must be non-empty strings")
    if len(set(raw)) != len(raw):
        dup = next(n for n in raw if raw.count(n) > 1)
        raise BundleError(f"{where}: feature name {dup!r} appears twice")
    unknown = [n for n in raw if not is_known_feature(n)]
    if unknown:
        raise BundleError(
            f"{where}: unknown feature name {unknown[0]!r} (not in the agent schema or samples)"
        )
    return tuple(raw)


def _ranges(path: Path, names: Sequence[str], raw: dict[str, Any]) -> dict[str, FeatureRange]:
    where = path / META_FILE
    if set(raw) != set(names):
        extra = sorted(set(raw) ^ set(names))
        raise BundleError(f"{where}: ranges do not match feature_names (differ on {extra[0]!r})")
    out: dict[str, FeatureRange] = {}
    for name in names:
        r = raw[name]
        try:
            fr = FeatureRange(float(r["min"]), float(r["max"]), float(r["p1"]), float(r["p99"]))
        except (KeyError, TypeError, ValueError):
            raise BundleError(f"{where}: range of {name!r} needs numeric min, max, p1, p99") from None
        vals = (fr.min, fr.max, fr.p1, fr.p99)
        if not all(math.isfinite(v) for v in vals) or fr.min > fr.max:
            raise BundleError(f"{where}: range of {name!r} is not a finite interval")
        out[name] = fr
    return out


def _numbers(path: Path, key: str, raw: dict[str, Any]) -> dict[str, float]:
    try:
        return {str(k): float(v) for k, v in raw.items() if v is not None}
    except (TypeError, ValueError):
        raise BundleError(f"{path / META_FILE}: {key!r} values must be numbers") from None


# -- writing -------------------------------------------------------------------------------------


def build_meta(
    *,
    onnx: bytes,
    feature_names: Sequence[str],
    transform: str,
    ranges: Mapping[str, FeatureRange],
    metrics: Mapping[str, float],
    inference: Mapping[str, float],
    batch_size: int,
    family: str,
    training: Mapping[str, Any],
    target: str = "rtt_s",
    scale: float = 1.0,
    now: datetime | None = None,
) -> dict[str, Any]:
    created = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    return {
        "format_version": BUNDLE_VERSION,
        "created_at": created,
        "family": family,
        "input_name": INPUT_NAME,
        "feature_names": list(feature_names),
        "target": {"name": target, "unit": "seconds", "transform": transform, "scale": float(scale)},
        "ranges": {n: ranges[n].as_dict() for n in feature_names},
        "metrics": dict(metrics),
        "inference": dict(inference),
        "batch_size": int(batch_size),
        "sha256": hashlib.sha256(onnx).hexdigest(),
        "training": dict(training),
    }


def write_bundle(
    out: str | Path,
    onnx: bytes,
    meta: Mapping[str, Any],
    *,
    extra: Callable[[Path], None] | None = None,
) -> Bundle:
    """Write ``model.onnx`` + ``model.json`` (and whatever ``extra`` adds) and swap into ``out``.

    The result is validated by ``load_bundle`` *before* it replaces anything, so a bad bundle never
    reaches ``out``.
    """
    out = Path(out)
    if meta.get("sha256") != hashlib.sha256(onnx).hexdigest():
        raise BundleError("model.json sha256 does not match the ONNX bytes being written")

    def fill(tmp: Path) -> None:
        _write_file(tmp / MODEL_FILE, onnx)
        _write_file(tmp / META_FILE, orjson.dumps(meta, option=orjson.OPT_INDENT_2) + b"\n")
        load_bundle(tmp)
        if extra is not None:
            extra(tmp)

    publish_dir(out, fill)
    return load_bundle(out)


def publish_dir(out: Path, fill: Callable[[Path], None]) -> None:
    """Build a directory with ``fill(tmp)`` beside ``out``, then swap it in; nothing half-written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        fill(tmp)
        os.chmod(tmp, 0o755)
        _fsync_dir(tmp)
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2() -> Callable[..., int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    with contextlib.suppress(OSError, AttributeError):
        fn = ctypes.CDLL(name, use_errno=True).renameat2
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        fn.restype = ctypes.c_int
        return fn  # type: ignore[no-any-return]
    return None


def replace_dir(src: Path, dst: Path) -> None:
    """Move directory ``src`` to ``dst``, atomically replacing an existing ``dst`` where possible.

    On return ``src`` no longer exists (an old ``dst`` is removed after the swap).
    """
    if not dst.exists():
        os.rename(src, dst)
        return
    fn = _renameat2()
    if fn is not None and fn(_AT_FDCWD, bytes(src), _AT_FDCWD, bytes(dst), _RENAME_EXCHANGE) == 0:
        shutil.rmtree(src)  # src now holds the old bundle
        return
    # No RENAME_EXCHANGE (old kernel, some filesystems): two renames, a brief gap readers retry.
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    os.rename(dst, old)
    os.rename(src, dst)
    shutil.rmtree(old, ignore_errors=True)
