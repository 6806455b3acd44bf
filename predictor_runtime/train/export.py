"""Export a fitted model to ONNX and prove the export computes what the native model does.

scikit-learn pipelines go through skl2onnx (opset ``SKL_OPSET``); LightGBM through onnxmltools'
``convert_lightgbm``, whose converter supports opset ``LGBM_OPSET`` at most with the installed onnx
(onnx 1.23, onnxmltools 1.16, skl2onnx 1.20, onnxruntime 1.32: checked together). The input is
one float32 tensor ``[None, k]`` named ``bundle.INPUT_NAME``.

Parity: the ONNX graph, run by onnxruntime through the same ``Scorer`` the proxy uses, must match
the native model on the test split to within ``tolerance`` relative error on RTT seconds. Trees
compare float32 thresholds in ONNX, so an input within one float32 ulp of a split can take the
other branch; the check is on the maximum over all rows, so such a row fails loudly too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from predictor_runtime.bundle import INPUT_NAME
from predictor_runtime.scorer import Scorer

from . import zoo

SKL_OPSET = 17
LGBM_OPSET = 15
DEFAULT_TOLERANCE = 1e-3


class ExportError(RuntimeError):
    """The model could not be exported, or its ONNX form disagrees with it."""


@dataclass(frozen=True, slots=True)
class Parity:
    max_rel_error: float
    p99_rel_error: float
    rows: int


def to_onnx(model: Any, family: str, n_features: int) -> bytes:
    try:
        if family == "lgbm":
            import onnxmltools
            from onnxmltools.convert.common.data_types import FloatTensorType as MLFloat

            proto = onnxmltools.convert_lightgbm(
                model, initial_types=[(INPUT_NAME, MLFloat([None, n_features]))], target_opset=LGBM_OPSET
            )
            exact_float32_thresholds(proto, model.booster_.dump_model())
        else:
            from skl2onnx import to_onnx as skl_to_onnx
            from skl2onnx.common.data_types import FloatTensorType

            proto = skl_to_onnx(
                model,
                initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
                target_opset=SKL_OPSET,
            )
    except Exception as exc:  # converters raise anything from RuntimeError to KeyError
        raise ExportError(f"{family}: ONNX export failed: {exc}") from exc
    return bytes(proto.SerializeToString())


def exact_float32_thresholds(proto: Any, dump: dict[str, Any]) -> int:
    """Make LightGBM's split thresholds exact for float32 inputs; returns how many were moved.

    LightGBM splits on ``x <= t`` with ``t`` a double; the ONNX tree ensemble stores ``float32(t)``,
    rounded to nearest. When that rounds *up*, an input exactly equal to it goes left in ONNX and
    right in LightGBM. The largest float32 not above ``t`` makes the two agree on every float32
    input. Nodes are matched by walking both trees from the root, left (true) branch first.
    """
    node = next((n for n in proto.graph.node if n.op_type == "TreeEnsembleRegressor"), None)
    if node is None:
        return 0
    att = {a.name: a for a in node.attribute}
    values = np.array(att["nodes_values"].floats, dtype=np.float32)
    index = {
        (t, n): i
        for i, (t, n) in enumerate(zip(att["nodes_treeids"].ints, att["nodes_nodeids"].ints, strict=True))
    }
    modes, true_ids, false_ids = (
        att["nodes_modes"].strings,
        att["nodes_truenodeids"].ints,
        att["nodes_falsenodeids"].ints,
    )
    moved = 0
    for tree_id, tree in enumerate(dump["tree_info"]):
        children = {c for (t, _), i in index.items() if t == tree_id and modes[i] != b"LEAF"
                    for c in (true_ids[i], false_ids[i])}  # fmt: skip
        roots = [n for (t, n) in index if t == tree_id and n not in children]
        if len(roots) != 1:
            return moved
        stack = [(tree["tree_structure"], roots[0])]
        while stack:
            lg, onnx_id = stack.pop()
            i = index[(tree_id, onnx_id)]
            if "split_index" not in lg or modes[i] != b"BRANCH_LEQ":
                continue
            t = float(lg["threshold"])
            if float(values[i]) > t and np.float32(t) == values[i]:
                values[i] = np.nextafter(values[i], np.float32(-np.inf))
                moved += 1
            stack += [(lg["left_child"], true_ids[i]), (lg["right_child"], false_ids[i])]
    att["nodes_values"].floats[:] = values.tolist()
    return moved


def inverse(transform: str, v: np.ndarray) -> np.ndarray:
    if transform == "log":
        return np.exp(v)
    if transform == "log1p":
        return np.maximum(np.expm1(v), 0.0)
    return np.maximum(v, 0.0)


def forward(transform: str, rtt_s: np.ndarray) -> np.ndarray:
    if transform == "log":
        return np.log(np.maximum(rtt_s, 1e-9))
    if transform == "log1p":
        return np.log1p(rtt_s)
    return rtt_s


def check_parity(
    onnx: bytes,
    model: Any,
    names: tuple[str, ...],
    transform: str,
    x: np.ndarray,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Parity:
    """Compare ONNX (via ``Scorer``) with the native model on ``x``; raise ``ExportError`` if apart."""
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    native = inverse(transform, zoo.predict(model, x32))
    scorer = Scorer(onnx, names, transform, max_batch=1)
    got = scorer.score(x32).astype(np.float64)
    rel = np.abs(got - native) / np.maximum(np.abs(native), 1e-9)
    parity = Parity(float(rel.max()), float(np.percentile(rel, 99)), len(rel))
    if not parity.max_rel_error <= tolerance:
        raise ExportError(
            f"ONNX vs native parity: max relative error {parity.max_rel_error:.3g} over {len(rel)} "
            f"test rows exceeds the tolerance {tolerance:g}"
        )
    return parity
