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
