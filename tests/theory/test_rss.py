"""Random subset sum: exact coverage errors, the science's trends at small scale, the scaling fit, limits."""

import itertools

import numpy as np
import pytest

from mole.errors import ConfigError
from mole.theory.rss import coverage_errors, fit_scaling, n_needed, quant_floor, rss_experiment
from mole.theory.subset_sum import max_cover_distance


def _all_sums(q: np.ndarray) -> np.ndarray:
    return np.array([sum(c) for r in range(len(q) + 1) for c in itertools.combinations(q, r)])


@pytest.mark.parametrize(
    "sums,expected",
    [
        ([0.0], 1.0),  # one sum in the middle: the ends are the worst z
        ([-1.0, 1.0], 1.0),  # the gap's peak at 0
        ([-3.0, 3.0], 3.0),  # a gap wider than the interval: its peak at 0 is inside
        ([0.5, 2.0], 1.5),  # nothing below: z = -1 is the worst
        ([-5.0, 0.9, 5.0], 1.9),  # the gap (-5, 0.9) peaks at -2.05, outside: d(-1) = 1.9
        ([-1.0, -0.2, 0.0, 0.2, 1.0], 0.4),  # the widest inside gap (0.2, 1) peaks at 0.6
        ([-2.0, -1.5, 0.0, 1.9], 0.95),  # gap (0, 1.9): peak 0.95 inside; d(-1) = 0.5
        ([-7, -1, 0, 3, 9], 1.0),  # ints: the gap (0, 3) peaks at 1.5, outside: d(1) = 1
    ],
)
def test_max_cover_distance_cases(sums, expected):
    assert max_cover_distance(np.array(sums), -1, 1) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("bits", [None, 3, 8])
@pytest.mark.parametrize("seed", [0, 7, 11])
def test_exact_is_the_limit_of_finer_grids(bits, seed):
    """Brute force over every subset for n <= 12: a grid of spacing h under-reads the exact worst gap by at
    most h/2 (the distance to the nearest sum is 1-Lipschitz in z), and never over-reads it."""
    x = np.random.default_rng(seed).uniform(-1, 1, 12)
    m = None if bits is None else 2 ** (bits - 1) - 1
    q = x if bits is None else np.rint(x * m) / m
    ns = [1, 4, 8, 12]
    exact = coverage_errors(x, ns, bits)
    for n, e in zip(ns, exact):
        sums = np.sort(_all_sums(q[:n]))
        gaps = []
        for points in (201, 2001, 20001, 200001):
            z = np.linspace(-1, 1, points)
            nearest = np.searchsorted(sums, z)
            lo, hi = sums[np.clip(nearest - 1, 0, None)], sums[np.clip(nearest, None, len(sums) - 1)]
            fine = np.minimum(np.abs(z - lo), np.abs(z - hi)).max()
            assert fine <= e + 1e-12 and e - fine <= 1 / (points - 1) + 1e-12  # spacing 2/(points-1)
            gaps.append(e - fine)
        # the grids are nested (each holds the coarser ones), so the under-read only shrinks as they refine
        assert all(a >= b - 1e-15 for a, b in zip(gaps, gaps[1:])) and gaps[-1] <= 1e-5
    if bits is not None:
        assert exact[-1] >= quant_floor(bits) - 1e-12  # the b-bit grid's floor over every z: 1/(2m)
    assert all(e0 >= e1 for e0, e1 in zip(exact, exact[1:]))


def test_exact_floor_of_a_full_grid():
    # 40 draws at 2 bits cover every level -1, 0, 1 many times: the worst z is midway between two levels
    x = np.random.default_rng(0).uniform(-1, 1, 40)
    assert coverage_errors(x, [40], 2) == [pytest.approx(0.5)] and quant_floor(2) == 0.5


def test_exact_needs_at_least_the_grids_n():
    """At every (n, eps) the exact method succeeds no more often than the grid: its error is the larger."""
    args = dict(n=range(2, 15), eps=[0.1, 0.02, 0.005], bits=[None, 4], trials=40, seed=2)
    exact, grid = rss_experiment(**args), rss_experiment(**args, method="grid")
    assert {r["method"] for r in exact} == {"exact"} and {r["targets"] for r in exact} == {None}
    assert {r["method"] for r in grid} == {"grid"} and {r["targets"] for r in grid} == {201}
    assert all(e["successes"] <= g["successes"] for e, g in zip(exact, grid))
    assert sum(e["successes"] < g["successes"] for e, g in zip(exact, grid)) >= 3
    assert {r["method"] for r in n_needed(exact, 0.9)} == {"exact"}


def test_quickstart_smallest_eps_needs_one_more_sample_exactly():
    """configs/quickstart/baselines.yaml's rss cell at eps = 0.001: the grid said n90 = 17, exactly it is 18."""
    args = dict(n=range(15, 21), eps=[0.001], bits=[None], trials=300, seed=0)
    for method, n90 in (("grid", 17), ("exact", 18)):
        rows = rss_experiment(**args, method=method)
        assert n_needed(rows, 0.9)[0]["n_needed"] == n90


@pytest.mark.parametrize("bits", [None, 3, 8])
def test_coverage_errors_match_brute_force(bits):
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, 10)
    z = np.linspace(-1, 1, 41)
    q = x if bits is None else np.rint(x * (2 ** (bits - 1) - 1)) / (2 ** (bits - 1) - 1)
    ns = [1, 4, 7, 10]
    expected = []
    for n in ns:
        sums = _all_sums(q[:n])
        expected.append(np.abs(z[:, None] - sums[None, :]).min(axis=1).max())
    np.testing.assert_allclose(coverage_errors(x, ns, bits, z), expected, atol=1e-12)
    assert all(e0 >= e1 for e0, e1 in zip(expected, expected[1:]))  # prefixes: more samples never hurt


def test_success_grows_with_n_and_eps():
    ns = (4, 7, 10, 13, 16)
    rows = rss_experiment(ns, [0.1, 0.01], [None], trials=150, seed=1, method="grid")
    p = {(r["n"], r["eps"]): r["p_success"] for r in rows}
    # seeds 0-3 give p(10, 0.1) ~ 0.9 vs p(10, 0.01) ~ 0.3, p(7, 0.1) ~ 0.5: wide margins below
    assert p[4, 0.1] <= 0.1 and p[7, 0.1] - p[4, 0.1] >= 0.3 and p[16, 0.1] >= 0.95
    assert p[16, 0.01] - p[7, 0.01] >= 0.8
    assert p[10, 0.1] - p[10, 0.01] >= 0.4
    for e in (0.1, 0.01):
        assert [p[n, e] for n in ns] == sorted(p[n, e] for n in ns)


def test_quantized_floor_and_dp_beyond_the_mitm_limit():
    assert quant_floor(4, 201) == pytest.approx(0.5 / 7, abs=0.01) and quant_floor(4) == 0.5 / 7
    rows = rss_experiment([60], [0.1, 0.01], [4], trials=5)  # n = 60: only the DP can do this
    p = {r["eps"]: r["p_success"] for r in rows}
    assert p[0.1] == 1.0 and p[0.01] == 0.0  # 0.01 is below the 4-bit grid's floor of ~0.071


def test_n_needed_and_fit():
    rows = [
        {"dist": "continuous", "bits": None, "n": n, "eps": e, "p_success": float(n >= 2 * k + 3)}
        for k, e in enumerate([0.5, 0.25, 0.125, 0.0625], start=1)
        for n in range(1, 15)
    ]
    needed = n_needed(rows, 0.9)
    assert [r["n_needed"] for r in needed] == [5, 7, 9, 11]
    fit = fit_scaling(needed)
    assert fit["slope"] == pytest.approx(2) and fit["intercept"] == pytest.approx(3)
    assert fit_scaling(needed, "8-bit") is None


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"n": [0, 4]}, "n: must be a non-empty list of positive integers"),
        ({"n": [41], "method": "grid"}, "n: 41 exceeds the exact-solver limit 40"),
        ({"n": [25]}, "n: 25 exceeds the exact method's limit 24"),
        ({"method": "fine"}, "method: must be one of ['exact', 'grid']"),
        ({"eps": [0.1, 0.0]}, "eps: must be a non-empty list of positive numbers"),
        ({"bits": [None, 1]}, "bits: unsupported bit-width"),
        ({"bits": [17]}, "bits: unsupported bit-width"),
        ({"trials": 0}, "trials: must be >= 1"),
        ({"n": [10**6], "bits": [16]}, "n: 1000000 with 16 bits exceeds the DP limit"),
    ],
)
def test_bad_input_is_one_line(kwargs, needle):
    args = {"n": [4], "eps": [0.1], "bits": [None], "trials": 2, **kwargs}
    with pytest.raises(ConfigError) as e:
        rss_experiment(**args)
    assert str(e.value).startswith(needle) and "\n" not in str(e.value)
