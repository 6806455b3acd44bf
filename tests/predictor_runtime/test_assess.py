import numpy as np
import pytest

from predictor_runtime.train.assess import SCALE_BOUNDS, accuracy_metrics, mape_scale, spearman


def _mape(obs: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - obs) / obs))


def test_mape_scale_sits_below_the_median_for_log_normal_noise_and_minimises_mape() -> None:
    rng = np.random.default_rng(3)
    median = rng.uniform(0.005, 0.05, 20_000)
    obs = median * np.exp(rng.normal(0.0, 0.7, median.size))
    c = mape_scale(obs, median)
    # theory: the 1/y-weighted median of a log-normal of spread s is its median times exp(-s^2)
    assert c == pytest.approx(np.exp(-0.49), rel=0.05)
    best = _mape(obs, c * median)
    for other in (1.0, 0.9 * c, 1.1 * c):
        assert best < _mape(obs, other * median)
    assert 1 - best > accuracy_metrics(obs, median)["accuracy"]


def test_mape_scale_of_exact_predictions_is_one_and_it_is_bounded() -> None:
    y = np.array([0.01, 0.02, 0.03, 0.5])
    assert mape_scale(y, y) == pytest.approx(1.0)
    assert mape_scale(y, y * 1e6) == SCALE_BOUNDS[0]
    assert mape_scale(y, y * 1e-6) == SCALE_BOUNDS[1]
    assert mape_scale(np.zeros(3), np.zeros(3)) == 1.0  # nothing to calibrate on


def test_spearman_sees_ranking_not_level() -> None:
    y = np.array([0.01, 0.02, 0.03, 0.5, 0.04])
    assert spearman(y, 0.3 * y) == pytest.approx(1.0)
    assert spearman(y, -y) == pytest.approx(-1.0)
    assert spearman(y, np.ones_like(y)) == 0.0
    assert accuracy_metrics(y, 2 * y)["spearman"] == pytest.approx(1.0)


def test_the_bundle_carries_the_calibrated_scale_and_both_accuracies(trained) -> None:  # type: ignore[no-untyped-def]
    import orjson

    out, result = trained
    meta = orjson.loads((out / "model.json").read_bytes())
    sel = result.selected
    assert meta["target"]["scale"] == pytest.approx(sel.scale)
    assert meta["metrics"]["accuracy"] == pytest.approx(sel.test["accuracy"])
    assert meta["metrics"]["accuracy_unscaled"] == pytest.approx(sel.test_unscaled_accuracy)
    assert -1.0 <= meta["metrics"]["spearman"] <= 1.0
    report = (out / "report" / "report.md").read_text()
    assert f"scaled by {sel.scale:.3f}" in report


def test_no_calibrate_ships_the_fits_own_level(synth_path, tmp_path, small_opts) -> None:  # type: ignore[no-untyped-def]
    from predictor_runtime.bundle import load_bundle
    from predictor_runtime.train import pipeline

    opts = small_opts(calibrate=False, families=("lgbm",), per_backend=False)
    result = pipeline.run([str(synth_path)], tmp_path / "m", opts=opts)
    assert result.selected.scale == 1.0 and load_bundle(tmp_path / "m").scale == 1.0
    assert result.selected.test["accuracy"] == pytest.approx(result.selected.test_unscaled_accuracy)


def test_cell_ceiling_is_exact_for_noiseless_cells_and_drops_with_noise() -> None:
    from predictor_runtime.train.assess import cell_ceiling

    rng = np.random.default_rng(5)
    backend = rng.choice(np.array(["a", "b"], dtype=object), 4000)
    cls = rng.choice([128.0, 256.0], 4000)
    base = np.where(backend == "a", 0.01, 0.03) * (cls / 128.0)
    exact = cell_ceiling(base, [backend, cls])
    assert exact["accuracy"] == pytest.approx(1.0) and exact["cells"] == 4 and exact["rows"] == 4000
    noisy = cell_ceiling(base * np.exp(rng.normal(0, 0.7, 4000)), [backend, cls])
    assert 0.3 < noisy["accuracy"] < 0.75
    thin = cell_ceiling(np.array([0.01, 0.02]), [np.array(["a", "b"], dtype=object)])
    assert thin["rows"] == 0.0  # one-row cells say nothing


def test_the_report_carries_the_noise_check(trained) -> None:  # type: ignore[no-untyped-def]
    out, result = trained
    assert result.noise["rows"] > 0 and 0.0 < result.noise["accuracy"] <= 1.0
    assert "Noise check:" in (out / "report" / "report.md").read_text()


def test_selection_breaks_a_near_tie_in_accuracy_by_decision_time() -> None:
    from predictor_runtime.train.pipeline import ACCURACY_TIE, Candidate, _select

    def cand(family: str, acc: float, p99_us: float, r2: float = 0.5) -> Candidate:
        c = Candidate(family, val={"accuracy": acc, "r2": r2}, inference={"p99_s": p99_us * 1e-6})
        c.fits_budget = True
        return c

    rf, lgbm = cand("rf", 0.520, 104.0), cand("lgbm", 0.520 - ACCURACY_TIE / 2, 12.0)
    assert _select([rf, lgbm]).family == "lgbm"  # as accurate, nine times faster
    clearly_better = cand("rf", 0.520 + 3 * ACCURACY_TIE, 104.0)
    assert _select([clearly_better, lgbm]).family == "rf"
    worse_than_mean = cand("ridge", 0.9, 1.0, r2=-3.0)
    assert _select([worse_than_mean, rf, lgbm]).family == "lgbm"
