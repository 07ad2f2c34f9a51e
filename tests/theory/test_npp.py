"""Number partitioning: the perfect-partition transition near kappa = 1 at n = 24, and the solver limits."""

import pytest

from mole.errors import ConfigError
from mole.theory.npp import kappa_c, kappa_half, npp_experiment, p_predicted


def test_transition_near_kappa_one():
    rows = npp_experiment([24], kappa_min=0.5, kappa_max=1.5, trials=60, seed=0)
    assert [r["b"] for r in rows] == list(range(12, 37))
    easy = [r["p_perfect"] for r in rows if r["kappa"] <= 0.7]
    hard = [r["p_perfect"] for r in rows if r["kappa"] >= 1.3]
    assert min(easy) >= 0.95 and max(hard) <= 0.05
    k50 = kappa_half(rows, 24)
    assert 0.8 <= k50 <= 1.05
    assert abs(k50 - kappa_half(rows, 24, "p_predicted")) <= 0.08  # the first-moment estimate tracks it


def test_reference_curves():
    assert kappa_c(16) == pytest.approx(1 - 4 / 32)
    assert p_predicted(30, 10) > 0.999 and p_predicted(30, 45) < 0.001


def test_dp_handles_large_n_with_small_integers():
    rows = npp_experiment([60], kappa_min=0.05, kappa_max=0.1, trials=5)
    assert [r["b"] for r in rows] == [3, 4, 5, 6] and all(r["p_perfect"] == 1.0 for r in rows)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"n": [0]}, "n: must be a non-empty list of positive integers"),
        ({"n": [41]}, "n: 41 exceeds the exact-solver limit 40"),
        ({"n": [20], "kappa_max": 3.0}, "kappa_max: b = 60 bits with n = 20: sums overflow int64"),
        ({"kappa_min": 1.2, "kappa_max": 1.0}, "kappa_min: need 0 < kappa_min <= kappa_max"),
        ({"trials": 0}, "trials: must be >= 1"),
    ],
)
def test_bad_input_is_one_line(kwargs, needle):
    args = {"n": [10], "kappa_min": 0.5, "kappa_max": 1.0, "trials": 2, **kwargs}
    with pytest.raises(ConfigError) as e:
        npp_experiment(**args)
    assert str(e.value).startswith(needle) and "\n" not in str(e.value)
