"""``Scorer``: one onnxruntime session scoring a batch of candidate rows inline on the event loop.

A routing decision scores a handful of rows; at that size onnxruntime's own work is a few
microseconds and the Python-side call dominates. ``InferenceSession.run`` converts the feed dict
and allocates the output on every call (~15 µs at 4 rows on this class of machine). The fast path
here binds, once per batch size, the input to rows of a preallocated matrix and the output to a
preallocated vector (``IOBinding`` with raw pointers), so a call is one ``run_with_iobinding``
(~5 µs). Callers get that path by filling the array returned by ``input_buffer(n)``; any other
float32 ``[n, k]`` array is scored through ``run`` (same result, slower).

Sessions are created with explicit providers (CPU), one intra-op and one inter-op thread and
sequential execution: scoring runs inline on the event loop (an executor hop costs ~100 µs, more
than the model), and one proxy worker per core must not spawn a thread pool per session.

A ``Scorer`` owns mutable buffers: use one per thread (the proxy has one per worker process).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .bundle import Bundle, BundleError, load_bundle

PROVIDERS: tuple[str, ...] = ("CPUExecutionProvider",)


def session_options() -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: warnings would land in the proxy log per load
    return opts


def _inverse(transform: str, scale: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    """Undo the target transform and apply the bundle's scale; the result is a new array (the bound
    output buffer is reused)."""
    if transform == "log":
        if scale == 1.0:
            return np.exp
        shift = np.float32(np.log(scale))  # exp(v + log c) = c * exp(v), one ufunc call fewer
        return lambda v: np.exp(v + shift)
    if transform == "log1p":
        return lambda v: np.maximum(np.expm1(v), 0.0) * scale
    if transform == "identity":
        return lambda v: np.maximum(v, 0.0) * scale
    raise BundleError(f"unknown target transform {transform!r}")


class Scorer:
    """Scores ``[n, k]`` float32 rows (columns in ``feature_names`` order) -> RTT seconds ``[n]``."""

    def __init__(
        self,
        model: bytes,
        feature_names: Sequence[str],
        transform: str,
        *,
        max_batch: int = 64,
        version: str = "",
        scale: float = 1.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not 0.0 < scale < float("inf"):
            raise ValueError(f"scale must be a positive finite number, got {scale}")
        self.feature_names: tuple[str, ...] = tuple(feature_names)
        self.transform = transform
        self.version = version
        self.max_batch = max_batch
        self.scale = float(scale)
        self._inv = _inverse(transform, self.scale)
        try:
            self._session = ort.InferenceSession(model, session_options(), providers=list(PROVIDERS))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BundleError(f"onnxruntime refused the model: {exc}") from None
        self._in_name, self._out_name = self._check_signature()
        k = len(self.feature_names)
        self._in = np.zeros((max_batch, k), dtype=np.float32)
        self._out = np.zeros((max_batch, 1), dtype=np.float32)
        self._views: list[np.ndarray] = [self._in[:n] for n in range(max_batch + 1)]
        self._bindings: list[ort.IOBinding | None] = [None] + [self._bind(n) for n in range(1, max_batch + 1)]
        self._warm_up()

    @classmethod
    def load(cls, bundle: Bundle | str | Path, max_batch: int = 64) -> Scorer:
        """Load from a bundle (already validated) or a bundle directory (validated here)."""
        b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        return cls(b.onnx, b.feature_names, b.transform, max_batch=max_batch, version=b.sha256, scale=b.scale)

    # -- public surface --------------------------------------------------------------------------
    def input_buffer(self, n: int) -> np.ndarray:
        """A preallocated float32 ``[n, k]`` view to fill and pass to ``score`` (the fast path).

        The same view is returned for the same ``n``; its contents persist between calls, so a
        caller that fills every column each time needs no clearing. Beyond ``max_batch`` rows a new
        array is returned (scored through the slower path).
        """
        if 0 <= n <= self.max_batch:
            return self._views[n]
        return np.zeros((n, len(self.feature_names)), dtype=np.float32)

    def score(self, x: np.ndarray) -> np.ndarray:
        """Predicted RTT in seconds for each row of ``x``, in one onnxruntime call."""
        n = x.shape[0]
        if n <= self.max_batch and x is self._views[n]:
            if n == 0:
                return np.zeros(0, dtype=np.float32)
            self._session.run_with_iobinding(self._bindings[n])
            return self._inv(self._out[:n, 0])
        return self._score_any(x)

    # -- internals -------------------------------------------------------------------------------
    def _score_any(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ValueError(f"expected [n, {len(self.feature_names)}] rows, got shape {x.shape}")
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=np.float32)
        out = self._session.run([self._out_name], {self._in_name: x})[0]
        return self._inv(out.reshape(-1))

    def _check_signature(self) -> tuple[str, str]:
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise BundleError(f"model must have one input and an output, has {len(inputs)} inputs")
        shape = inputs[0].shape
        k = len(self.feature_names)
        if len(shape) != 2 or shape[1] != k:
            raise BundleError(f"model input shape {shape} does not match {k} feature_names")
        if inputs[0].type != "tensor(float)" or outputs[0].type != "tensor(float)":
            raise BundleError(
                f"model must take and return float32, has {inputs[0].type} -> {outputs[0].type}"
            )
        out_shape = outputs[0].shape
        if not (len(out_shape) == 1 or (len(out_shape) == 2 and out_shape[1] == 1)):
            raise BundleError(f"model output shape {out_shape} is not one value per row")
        self._out_rank = len(out_shape)
        return inputs[0].name, outputs[0].name

    def _bind(self, n: int) -> ort.IOBinding:
        binding = self._session.io_binding()
        k = len(self.feature_names)
        binding.bind_input(self._in_name, "cpu", 0, np.float32, [n, k], self._in.ctypes.data)
        out_shape = [n, 1] if self._out_rank == 2 else [n]
        binding.bind_output(self._out_name, "cpu", 0, np.float32, out_shape, self._out.ctypes.data)
        return binding

    def _warm_up(self) -> None:
        """First runs allocate ORT's arenas and kernels: pay that here, not in a request."""
        for n in {1, min(4, self.max_batch), self.max_batch}:
            self.score(self._views[n])
        self.score(np.zeros((1, len(self.feature_names)), dtype=np.float32))
        self._in.fill(0.0)
