import numpy as np
import pytest

from predictor_runtime.train.select import Ranking, choose_k, rank_features


def _data() -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    n = 2000
    load = rng.uniform(0, 1, n)
    size = rng.choice([64.0, 256.0, 1024.0], n)
    y = 0.002 + 0.02 * load**2 + 1e-5 * size + rng.normal(0, 1e-4, n)
    cols = {
        "host_cpu_util": load + rng.normal(0, 0.02, n),
        "cg_cpu_util": load * 1.01 + rng.normal(0, 0.001, n),  # near-duplicate of host_cpu_util
        "gpu_util": np.zeros(n),  # constant
        "host_disk_io_bytes_per_s": rng.normal(0, 1, n),  # noise
        "app_queue_length": np.exp(3 * load) + rng.normal(0, 0.5, n),  # monotone, non-linear
        "req_class": size,
    }
    return np.column_stack(list(cols.values())), y, list(cols)


def test_constant_and_duplicate_columns_are_dropped_correlated_ones_kept() -> None:
    x, y, names = _data()
    ranking = rank_features(x, y, names, always=["req_class"])
    status = {f.name: f.status for f in ranking.features}
    assert status["gpu_util"] == "constant"
    assert status["req_class"] == "always"
    dup = "cg_cpu_util" if status["host_cpu_util"] == "kept" else "host_cpu_util"
    assert status[dup].startswith("duplicate of ")
    assert set(ranking.eligible[:2]) in (
        {"host_cpu_util", "app_queue_length"},
        {"cg_cpu_util", "app_queue_length"},
    )
    assert ranking.eligible[-1] == "host_disk_io_bytes_per_s"


def test_spearman_sees_a_monotone_relation_pearson_understates() -> None:
    u = np.random.default_rng(1).uniform(0, 1, 500)
    (f,) = rank_features(np.exp(8 * u)[:, None], u, ["app_queue_length"]).features
    assert f.spearman == pytest.approx(1.0) and f.pearson < 0.9 and f.score == f.spearman


def test_k_trims_the_ranking_and_keeps_always_columns() -> None:
    x, y, names = _data()
    ranking = rank_features(x, y, names, always=["req_class"]).with_k(1)
    assert ranking.kept[0] == "req_class" and len(ranking.kept) == 2
    assert sum(f.status == "below top k" for f in ranking.features) == len(ranking.eligible) - 1


def test_choose_k_prefers_the_smallest_k_within_tolerance() -> None:
    x, y, names = _data()
    ranking: Ranking = rank_features(x, y, names)
    scores = {1: 0.80, 2: 0.905, 3: 0.906, 4: 0.85}
    k, seen = choose_k(ranking, lambda cols: scores[len(cols)], grid=(1, 2, 3, 99))
    assert k == 2
    assert len(ranking.eligible) == 4  # the grid's 99 is clipped to what is eligible
    assert set(seen) == {1, 2, 3, 4}


def test_inputs_that_rule_out_prediction_tables_must_earn_their_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``proxy_ewma_s`` and ``proxy_feature_age_s`` make every decision a model call: kept only when
    the probe without them loses more than the accuracy tie on validation."""
    from predictor_runtime.train import pipeline
    from predictor_runtime.train.select import FeatureRank, Ranking

    ranking = Ranking((
        FeatureRank("req_class", 0.5, 0.5, 0.5, "always"),
        FeatureRank("proxy_ewma_s", 0.6, 0.6, 0.6, "kept"),
        FeatureRank("cg_cpu_util", 0.4, 0.4, 0.4, "kept"),
        FeatureRank("proxy_feature_age_s", 0.1, 0.1, 0.1, "below top k"),
    ))  # fmt: skip
    probed: list[list[str]] = []

    def run(without: float) -> tuple[Ranking, dict[str, object]]:
        def probe(ds: object, split: object, fit_idx: object, cols: list[str], opts: object) -> float:
            probed.append(cols)
            return without

        monkeypatch.setattr(pipeline, "_probe", probe)
        return pipeline._table_friendly(None, None, None, ranking, ["backend=b1"], 0.70, budget, opts)  # type: ignore[arg-type]

    tie = pipeline.ACCURACY_TIE
    opts = pipeline.TrainOptions(scored_decision_s=300e-6)
    budget = 1e-3  # a scored decision fits
    dropped, info = run(0.70 - tie / 2)
    assert probed[-1] == ["req_class", "cg_cpu_util", "backend=b1"]  # only the kept one is tried out
    assert (info["inputs"], info["without"], info["dropped"]) == (["proxy_ewma_s"], 0.70 - tie / 2, True)
    assert dropped.kept == ["req_class", "cg_cpu_util"]
    assert next(f for f in dropped.features if f.name == "proxy_ewma_s").status.startswith("dropped")
    kept, info = run(0.70 - 2 * tie)  # losing more than the tie: worth a model call a decision
    assert kept.kept == ["req_class", "proxy_ewma_s", "cg_cpu_util"] and info["dropped"] is False
    budget = 290e-6  # ... unless a decision that calls the model does not fit the budget
    over, info = run(0.70 - 2 * tie)
    assert over.kept == ["req_class", "cg_cpu_util"] and info["dropped"] and not info["fits_budget"]
    calls = len(probed)
    none_kept = kept.dropping(["proxy_ewma_s"], "x")
    _, info = pipeline._table_friendly(None, None, None, none_kept, [], 0.7, 1e-3, opts)  # type: ignore[arg-type]
    assert info == {} and len(probed) == calls  # none among the kept: no probe
