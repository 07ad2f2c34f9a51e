"""Random subset sum: exact coverage errors, the science's trends at small scale, the scaling fit, limits."""

import itertools

import numpy as np
import pytest

from mole.errors import ConfigError
from mole.theory.rss import coverage_errors, fit_scaling, n_needed, quant_floor, rss_experiment


@pytest.mark.parametrize("bits", [None, 3, 8])
def test_coverage_errors_match_brute_force(bits):
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, 10)
    z = np.linspace(-1, 1, 41)
    q = x if bits is None else np.rint(x * (2 ** (bits - 1) - 1)) / (2 ** (bits - 1) - 1)
    ns = [1, 4, 7, 10]
    expected = []
    for n in ns:
        sums = np.array([sum(c) for r in range(n + 1) for c in itertools.combinations(q[:n], r)])
        expected.append(np.abs(z[:, None] - sums[None, :]).min(axis=1).max())
    np.testing.assert_allclose(coverage_errors(x, ns, bits, z), expected, atol=1e-12)
    assert all(e0 >= e1 for e0, e1 in zip(expected, expected[1:]))  # prefixes: more samples never hurt


def test_success_grows_with_n_and_eps():
    ns = (4, 7, 10, 13, 16)
    rows = rss_experiment(ns, [0.1, 0.01], [None], trials=150, seed=1)
    p = {(r["n"], r["eps"]): r["p_success"] for r in rows}
    # seeds 0-3 give p(10, 0.1) ~ 0.9 vs p(10, 0.01) ~ 0.3, p(7, 0.1) ~ 0.5: wide margins below
    assert p[4, 0.1] <= 0.1 and p[7, 0.1] - p[4, 0.1] >= 0.3 and p[16, 0.1] >= 0.95
    assert p[16, 0.01] - p[7, 0.01] >= 0.8
    assert p[10, 0.1] - p[10, 0.01] >= 0.4
    for e in (0.1, 0.01):
        assert [p[n, e] for n in ns] == sorted(p[n, e] for n in ns)


def test_quantized_floor_and_dp_beyond_the_mitm_limit():
    assert quant_floor(4, 201) == pytest.approx(0.5 / 7, abs=0.01)
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
        ({"n": [41]}, "n: 41 exceeds the exact-solver limit 40"),
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
