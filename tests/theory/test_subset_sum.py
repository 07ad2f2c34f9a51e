"""The exact subset-sum solvers agree with brute force (itertools over all subsets) and enforce their limits."""

import itertools

import numpy as np
import pytest

from mole.errors import ConfigError
from mole.theory.npp import is_perfect
from mole.theory.subset_sum import (
    DP_MAX_BITS,
    bitset_window,
    closest_sum_distance,
    has_subset_sum,
    reachable_sums,
    sorted_subset_sums,
)


def brute_sums(values) -> list:
    return [sum(c) for r in range(len(values) + 1) for c in itertools.combinations(values, r)]


@pytest.mark.parametrize("n", [1, 2, 5, 8, 11, 12])
def test_closest_distance_matches_brute_force(n):
    rng = np.random.default_rng(n)
    x = rng.uniform(-1, 1, n)
    z = np.concatenate([np.linspace(-1, 1, 21), rng.uniform(-3, 3, 10)])
    sums = np.array(brute_sums(list(x)))
    expected = np.abs(z[:, None] - sums[None, :]).min(axis=1)
    np.testing.assert_allclose(closest_sum_distance(x, z), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sorted_subset_sums(x), np.sort(sums), atol=1e-12)


@pytest.mark.parametrize("n", [3, 6, 9, 12])
def test_integer_solvers_match_brute_force(n):
    rng = np.random.default_rng(100 + n)
    a = rng.integers(-20, 40, n)
    sums = set(brute_sums([int(v) for v in a]))
    bits, offset = reachable_sums(a)
    reach = {s for s in range(-offset, bits.bit_length() - offset) if (bits >> (s + offset)) & 1}
    assert reach == sums
    window = bitset_window(bits, offset, -7, 25)
    assert window.tolist() == sorted(s for s in sums if -7 <= s <= 25)
    pos = np.abs(a) + 1
    pos_sums = set(brute_sums([int(v) for v in pos]))
    for t in range(-2, int(pos.sum()) + 3):
        assert has_subset_sum(pos, t) == (t in pos_sums)


@pytest.mark.parametrize("n,b", [(4, 3), (8, 6), (10, 9), (12, 11), (12, 5), (12, 30), (9, 24)])
def test_perfect_partition_matches_brute_force(n, b):
    """b <= 11 runs the bitset DP, b >= 24 meet in the middle; both against the brute-force discrepancy."""
    rng = np.random.default_rng(1000 * n + b)
    seen = set()
    for _ in range(12):
        a = rng.integers(1, 2**b, n, endpoint=True)
        total = int(a.sum())
        best = min(abs(total - 2 * s) for s in brute_sums([int(v) for v in a]))
        perfect = best <= total % 2
        assert is_perfect(a) == perfect
        seen.add(perfect)
    if b <= n / 2:  # deep in the easy phase (kappa <= 1/2): perfect partitions exist
        assert seen == {True}
    if b >= 2 * n:  # deep in the hard phase: none
        assert seen == {False}


def test_limits_raise_clear_errors():
    with pytest.raises(ConfigError, match=r"^n: 41 exceeds the exact-solver limit 40"):
        closest_sum_distance(np.zeros(41), np.zeros(3))
    with pytest.raises(ConfigError, match=r"^n: 41 exceeds the exact-solver limit 40"):
        has_subset_sum(np.ones(41, dtype=np.int64), 3)
    with pytest.raises(ConfigError, match=r"exceeds the DP limit"):
        reachable_sums([DP_MAX_BITS])
