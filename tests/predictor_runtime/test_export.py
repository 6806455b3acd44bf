import numpy as np
import onnx
import pytest

from predictor_runtime.train import export, zoo

NAMES = ("host_cpu_util", "app_queue_length", "req_class")


def _fit(family: str) -> tuple[object, np.ndarray]:
    rng = np.random.default_rng(4)
    x = np.column_stack([rng.uniform(0, 1, 800), rng.poisson(3, 800), rng.choice([64.0, 1024.0], 800)])
    y = np.log(0.002 + 0.01 * x[:, 0] + 0.003 * x[:, 1] + 1e-5 * x[:, 2])
    return zoo.fit(family, x, y, NAMES, zoo.ZooConfig.small(), 0), x.astype(np.float32)


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_every_family_exports_with_parity(family: str) -> None:
    model, x = _fit(family)
    data = export.to_onnx(model, family, 3)
    parity = export.check_parity(data, model, NAMES, "log", x)
    assert parity.max_rel_error <= 1e-4 and parity.rows == 800


def test_parity_failure_is_loud() -> None:
    model, x = _fit("ridge")
    other, _ = _fit("rf")
    data = export.to_onnx(other, "rf", 3)
    with pytest.raises(export.ExportError, match="parity: max relative error"):
        export.check_parity(data, model, NAMES, "log", x)


def test_lightgbm_thresholds_are_exact_for_float32_inputs() -> None:
    # Values one float32 ulp apart: LightGBM splits between them in double; a nearest-float32
    # threshold would put one of them on the wrong side.
    rng = np.random.default_rng(5)
    base = np.float32(0.3)
    ulps = np.array(
        [
            base,
            np.nextafter(base, np.float32(1)),
            np.nextafter(np.nextafter(base, np.float32(1)), np.float32(1)),
        ]
    )
    col = rng.choice(ulps, 3000).astype(np.float32)
    x = np.column_stack([col, rng.uniform(0, 1, 3000), rng.uniform(0, 1, 3000)]).astype(np.float32)
    y = np.where(col > base, 1.0, 0.0) + 0.01 * x[:, 1]
    model = zoo.fit("lgbm", x, y, NAMES, zoo.ZooConfig.small(), 0)
    data = export.to_onnx(model, "lgbm", 3)
    proto = onnx.load_from_string(data)
    assert proto.graph.node[0].op_type == "TreeEnsembleRegressor"
    parity = export.check_parity(data, model, NAMES, "identity", x, tolerance=1e-4)
    assert parity.max_rel_error <= 1e-4
