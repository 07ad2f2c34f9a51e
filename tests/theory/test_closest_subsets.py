"""closest_subsets: the chosen subsets are exactly the best ones (against itertools), for many targets at once."""

import itertools

import numpy as np
import pytest

from mole.errors import ConfigError
from mole.theory.subset_sum import closest_subsets, closest_sum_distance


def brute_force(values: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(T,) the best distance per target over every subset of its own row of values."""
    n = values.shape[1]
    subsets = np.array(list(itertools.product([0, 1], repeat=n)), dtype=np.float64)  # (2^n, n)
    sums = values @ subsets.T  # (T, 2^n)
    return np.abs(targets[:, None] - sums).min(axis=1)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 11, 12])
def test_per_target_values_match_brute_force(n):
    rng = np.random.default_rng(n)
    values = rng.uniform(-1, 1, (300, n)) * rng.uniform(0, 1, (300, n))  # products, as in the SLTH
    targets = np.concatenate([rng.uniform(-1, 1, 250), rng.uniform(-4, 4, 50)])
    chosen, sums = closest_subsets(values, targets)
    assert chosen.shape == (300, n) and chosen.dtype == bool
    np.testing.assert_allclose(np.abs(targets - sums), brute_force(values, targets), rtol=0, atol=1e-12)
    np.testing.assert_allclose((values * chosen).sum(axis=1), sums, rtol=0, atol=1e-12)  # the subset is real


@pytest.mark.parametrize("n", [4, 12])
def test_shared_values_and_integer_ties(n):
    rng = np.random.default_rng(100 + n)
    values = rng.integers(-5, 9, n).astype(float)  # many equal sums: ties must still give a best subset
    targets = np.arange(-20, 41, 0.5)
    chosen, sums = closest_subsets(values, targets)
    best = brute_force(np.broadcast_to(values, (len(targets), n)), targets)
    np.testing.assert_array_equal(np.abs(targets - sums), best)
    np.testing.assert_array_equal(chosen.astype(float) @ values, sums)


def test_agrees_with_the_distance_solver_beyond_brute_force():
    rng = np.random.default_rng(7)
    values = rng.uniform(-1, 1, 22)
    targets = rng.uniform(-1, 1, 40)
    _, sums = closest_subsets(values, targets)
    np.testing.assert_allclose(np.abs(targets - sums), closest_sum_distance(values, targets), atol=1e-12)


def test_limit_and_shapes():
    with pytest.raises(ConfigError, match=r"^n: 41 exceeds the exact-solver limit 40"):
        closest_subsets(np.zeros((2, 41)), np.zeros(2))
    with pytest.raises(ConfigError, match=r"^baselines.subset_sum.n: 41 exceeds"):
        closest_subsets(np.zeros(41), np.zeros(3), field="baselines.subset_sum.n")
    with pytest.raises(ValueError, match="do not match 3 targets"):
        closest_subsets(np.zeros((2, 4)), np.zeros(3))
