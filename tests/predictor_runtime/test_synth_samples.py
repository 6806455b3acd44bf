from pathlib import Path

import numpy as np

from loadtest.synth_samples import feature_matrix, generate
from metrics_agent import schema
from predictor_runtime import samples


def test_same_seed_same_bytes_other_seed_other_world(tmp_path: Path) -> None:
    a = generate(tmp_path / "a.jsonl", n_samples=200, n_backends=2, seed=3).read_bytes()
    b = generate(tmp_path / "b.jsonl", n_samples=200, n_backends=2, seed=3).read_bytes()
    c = generate(tmp_path / "c.jsonl", n_samples=200, n_backends=2, seed=4).read_bytes()
    assert a == b and a != c


def test_records_follow_the_recorder_format(tmp_path: Path) -> None:
    path = generate(tmp_path / "s.jsonl", n_samples=300, n_backends=3, seed=1, restart_every=100)
    got = list(samples.read_samples(path))
    assert len(got) == 300
    assert got[0].feature_names == schema.feature_names()
    assert got[0].local_names == samples.LOCAL_FEATURES
    assert all(len(s.candidates) == 3 for s in got)
    assert path.read_bytes().count(b'"type":"header"') == 3  # the writer restarted twice
    assert {s.policy for s in got} == {"peak_ewma", "random"}
    assert all(s.explore == (s.policy == "random") for s in got)
    heavy = np.median([s.rtt_s for s in got if s.req_class == 1024 and s.status == 200])
    light = np.median([s.rtt_s for s in got if s.req_class == 64 and s.status == 200])
    assert heavy > 4 * light  # service time grows as size * log(size)


def test_window_aggregates_match_their_definition() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(80, 2, len(schema.BASE_METRICS)))
    feats = feature_matrix(base, (5, 20))
    names = schema.feature_names((5, 20))
    assert feats.shape == (80, 2, len(names))
    t, b, m = 50, 1, schema.BASE_METRICS.index("app_queue_length")
    col = {n: i for i, n in enumerate(names)}
    window = base[t - 4 : t + 1, b, m]
    assert feats[t, b, col["app_queue_length"]] == base[t, b, m]
    assert np.isclose(feats[t, b, col["app_queue_length.mean_5s"]], window.mean())
    assert np.isclose(feats[t, b, col["app_queue_length.max_5s"]], window.max())
    assert np.isclose(feats[t, b, col["app_queue_length.slope_5s"]], np.polyfit(np.arange(5), window, 1)[0])
