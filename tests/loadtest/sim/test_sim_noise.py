"""Calibrated prediction noise and the candidate samplers."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest.sim.noise import mape_of_sigma, sigma_for_accuracy
from loadtest.sim.policies.base import distinct_choices, distinct_pairs


@pytest.mark.parametrize("accuracy", [0.0, 0.5, 0.7, 0.9, 0.99])
def test_noise_hits_its_accuracy(accuracy: float) -> None:
    sigma = sigma_for_accuracy(accuracy)
    x = np.exp(sigma * np.random.default_rng(0).standard_normal(400_000))
    assert 1.0 - np.mean(np.abs(x - 1.0)) == pytest.approx(accuracy, abs=0.005)
    assert mape_of_sigma(sigma) == pytest.approx(1.0 - accuracy, abs=1e-9)


def test_perfect_accuracy_means_no_noise() -> None:
    assert sigma_for_accuracy(1.0) == 0.0


def test_noise_grows_as_accuracy_falls() -> None:
    sigmas = [sigma_for_accuracy(a) for a in (0.9, 0.7, 0.5, 0.0)]
    assert sigmas == sorted(sigmas)


@pytest.mark.parametrize("bad", [float("nan"), -1e30])
def test_unreachable_accuracy_is_an_error(bad: float) -> None:
    with pytest.raises(ValueError, match="accuracy"):
        sigma_for_accuracy(bad)


def test_distinct_pairs_are_distinct_and_cover_every_backend() -> None:
    a, b = distinct_pairs(np.random.default_rng(1), 5, 20_000)
    assert all(x != y for x, y in zip(a, b, strict=True))
    counts = np.bincount(a + b, minlength=5)
    assert counts.min() > 0.9 * counts.mean()


def test_distinct_choices_rows_are_uniform_subsets() -> None:
    rows = distinct_choices(np.random.default_rng(2), 6, 30_000, 3)
    assert all(len(set(r)) == 3 for r in rows.tolist())
    counts = np.bincount(rows.ravel(), minlength=6)
    assert counts.min() > 0.95 * counts.mean()


def test_distinct_choices_clamps_to_the_fleet() -> None:
    rows = distinct_choices(np.random.default_rng(3), 2, 10, 5)
    assert rows.shape == (10, 2)
    assert all(sorted(r) == [0, 1] for r in rows.tolist())
