import numpy as np
import pytest

from predictor_runtime.train import zoo


def test_monotone_constraints_by_name() -> None:
    names = [
        "host_cpu_util.mean_20s", "host_psi_io_some_avg10", "app_queue_length", "cg_throttled_periods_per_s",
        "proxy_in_flight", "proxy_ewma_s", "host_cpu_util.slope_5s", "req_class", "backend=b1", "app_workers",
    ]  # fmt: skip
    assert zoo.monotone_constraints(names) == [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]


@pytest.mark.parametrize("family", ["lgbm", "rf"])
def test_tree_models_never_predict_faster_under_more_pressure(family: str) -> None:
    rng = np.random.default_rng(0)
    n = 1500
    queue = rng.uniform(0, 10, n)
    size = rng.uniform(0, 1, n)
    # noisy data where the raw fit would wiggle: the constraint must hold anyway
    y = np.log(0.005 + 0.002 * queue + 0.01 * size) + rng.normal(0, 0.3, n)
    names = ["app_queue_length", "req_class"]
    model = zoo.fit(family, np.column_stack([queue, size]), y, names, zoo.ZooConfig.small(), seed=0)
    grid = np.column_stack([np.linspace(0, 10, 200), np.full(200, 0.5)])
    pred = zoo.predict(model, grid)
    assert (np.diff(pred) >= -1e-12).all()


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_every_family_fits_and_predicts(family: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (400, 3))
    y = x @ np.array([1.0, 2.0, 0.0])
    model = zoo.fit(
        family, x, y, ["host_cpu_util", "app_queue_length", "req_class"], zoo.ZooConfig.small(), 0
    )
    assert zoo.predict(model, x).shape == (400,)


def test_unknown_family_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown family 'xgb' \(known: ridge, rf, lgbm, mlp, table\)"):
        zoo.check_families(["ridge", "xgb"])
