import numpy as np

from predictor_runtime.train.balance import balance, fd_edges


def test_freedman_diaconis_width() -> None:
    v = np.arange(1000, dtype=np.float64)
    edges = fd_edges(v)
    width = 2 * (749.25 - 249.75) * 1000 ** (-1 / 3)
    assert len(edges) - 1 == int(np.ceil(999 / width))
    assert fd_edges(np.ones(10)).tolist() == [1.0, 2.0]


def test_bins_are_capped_and_rare_bins_kept_whole() -> None:
    rng = np.random.default_rng(0)
    common = rng.lognormal(np.log(0.005), 0.05, size=5000)
    rare = rng.lognormal(np.log(0.2), 0.3, size=60)
    rtt = np.concatenate([common, rare])
    bal = balance(rtt, np.random.default_rng(1), cap=100)
    assert bal.counts_after.max() <= 100
    assert bal.counts_before.max() > 100
    kept = set(bal.keep.tolist())
    assert set(range(5000, 5060)) <= kept  # the slow tail is under the cap: all of it stays
    assert len(bal.keep) < len(rtt)
    assert (np.diff(bal.keep) > 0).all()  # time order preserved
    # capped bins hold exactly the cap, uncapped ones their original population
    np.testing.assert_array_equal(bal.counts_after, np.minimum(bal.counts_before, 100))


def test_default_cap_is_relative_to_the_median_bin() -> None:
    rtt = np.random.default_rng(2).lognormal(np.log(0.01), 0.5, size=3000)
    bal = balance(rtt, np.random.default_rng(0))
    nonempty = bal.counts_before[bal.counts_before > 0]
    assert bal.cap == max(20, int(np.ceil(2 * np.median(nonempty))))
    assert bal.counts_after.max() <= bal.cap
