"""Random number partitioning: the perfect-partition phase transition at kappa = b/n = 1.

Split n integers a_i, i.i.d. uniform in {1, ..., 2^b}, into two sets whose sums differ by the
discrepancy D. A partition is *perfect* when D = 0 (total sum even) or D = 1 (odd), i.e. when some
subset sums to floor(total / 2). Mertens (1998, "Phase transition in the number partitioning
problem", PRL 81; 2001, "A physicist's approach to number partitioning", Theor. Comput. Sci. 265)
found a phase transition at kappa = b/n = 1: below it perfect partitions abound, above it there are
none. Borgs, Chayes & Pittel (2001, "Phase transition and finite-size scaling for the integer
partitioning problem", Random Structures & Algorithms 19) proved it and located the finite-size
window: kappa_n = 1 - log2(n) / (2n) + lambda_n / n, with P(perfect) -> 1, 0 or p(lambda) in (0, 1)
as lambda_n -> -inf, +inf or lambda. We mark kappa_c(n) = 1 - log2(n) / (2n) (their window centre).

The dashed prediction is our first-moment (Poisson) estimate in that window: D = sum_i s_i a_i with
random signs is about normal with variance n E[a^2] = n 4^b / 3 and has the parity of the total, so
the expected number of perfect partitions (s and -s counted once) is Q = 2^(n-b) sqrt(3 / (2 pi n))
for an even total and 2Q for an odd one (D = +1 or -1); with Poisson counts,
P(perfect) ~ 1 - (exp(-Q) + exp(-2Q)) / 2. In lambda = b - n + log2(n)/2, Q = 2^-lambda sqrt(3/(2 pi)),
so the curves for every n collapse when plotted against lambda.

Exact solver per instance (subset_sum.py): a bitset DP over reachable sums when the total is below
2^18 (small b), else meet in the middle (n <= 40). Totals must fit in int64: n 2^b < 2^62.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mole.errors import ConfigError
from mole.theory.io import save_figure
from mole.theory.subset_sum import DP_MAX_BITS, MITM_MAX_N, has_subset_sum, reachable_sums

_DP_BELOW = 1 << 18  # totals below this: the DP's n shift-ors beat meet in the middle's sorts
_INT64_LOG2 = 62  # n * 2^b must stay below 2^62 so that sums fit in int64 with room to spare


def is_perfect(values: np.ndarray) -> bool:
    """Whether the positive integers `values` have a perfect partition (discrepancy total % 2).

    Args:
        values: 1-D int array; n <= 40 unless the total is small enough for the DP (< 2^26).
    """
    values = np.asarray(values, dtype=np.int64)
    total = int(values.sum())
    half = total // 2  # discrepancy total - 2 * half = total % 2
    if total < _DP_BELOW or (len(values) > MITM_MAX_N and total < DP_MAX_BITS):
        bits, offset = reachable_sums(values)
        return bool((bits >> (half + offset)) & 1)
    return has_subset_sum(values, half)


def kappa_c(n: int) -> float:
    """Centre of the Borgs-Chayes-Pittel scaling window, 1 - log2(n) / (2n)."""
    return 1 - math.log2(n) / (2 * n)


def p_predicted(n: int, b: float) -> float:
    """First-moment (Poisson) estimate of P(perfect) for n integers of b bits (see the module docstring)."""
    q = 2.0 ** (n - b) * math.sqrt(3 / (2 * math.pi * n))
    return 1 - (math.exp(-q) + math.exp(-2 * q)) / 2


def _b_values(n: int, kappa_min: float, kappa_max: float) -> list[int]:
    # every integer b with kappa_min <= b / n <= kappa_max (the 1e-9 absorbs float error in kappa * n)
    return list(range(max(1, math.ceil(kappa_min * n - 1e-9)), math.floor(kappa_max * n + 1e-9) + 1))


def _validate(n, kappa_min, kappa_max, trials) -> None:
    if not n or any(int(v) != v or v <= 0 for v in n):
        raise ConfigError("n", f"must be a non-empty list of positive integers, got {list(n)}")
    if not 0 < kappa_min <= kappa_max:
        raise ConfigError("kappa_min", f"need 0 < kappa_min <= kappa_max, got {kappa_min} and {kappa_max}")
    if trials < 1:
        raise ConfigError("trials", f"must be >= 1, got {trials}")
    for nv in n:
        bs = _b_values(nv, kappa_min, kappa_max)
        if not bs:
            raise ConfigError("kappa_max", f"no integer b with {kappa_min} <= b/{nv} <= {kappa_max}")
        if bs[-1] + math.log2(nv) >= _INT64_LOG2:
            raise ConfigError(
                "kappa_max", f"b = {bs[-1]} bits with n = {nv}: sums overflow int64 (n 2^b >= 2^62)"
            )
        if nv > MITM_MAX_N and nv * 2 ** bs[-1] >= DP_MAX_BITS:
            raise ConfigError(
                "n", f"{nv} exceeds the exact-solver limit {MITM_MAX_N} (meet in the middle) at b = {bs[-1]}, "
                f"and its sums exceed the DP limit {DP_MAX_BITS}"
            )  # fmt: skip


def npp_experiment(
    n: Sequence[int],
    kappa_min: float = 0.4,
    kappa_max: float = 1.6,
    trials: int = 200,
    seed: int = 0,
    on_cell: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """P(perfect partition) for n random b-bit integers, at every integer b with kappa = b/n in range.

    Args:
        n: numbers of integers (each <= 40, or larger when n 2^b < 2^26 so that the DP applies).
        kappa_min, kappa_max: the range of kappa = b / n to sweep (every integer b inside is run).
        trials: random instances per (n, b).
        seed: base seed; the instances of (n, b) come from a numpy Generator seeded with (seed, n, b),
            so a cell's result does not depend on which other cells are run.
        on_cell: progress: called as on_cell(done, cells) after each (n, b).

    Returns:
        one dict per (n, b): n, b, kappa, trials, perfect, p_perfect, kappa_c_n, p_predicted.
    """
    ns = sorted(set(int(v) for v in n))
    _validate(ns, kappa_min, kappa_max, trials)
    cells = [(nv, b) for nv in ns for b in _b_values(nv, kappa_min, kappa_max)]
    rows = []
    for nv, b in cells:
        rng = np.random.default_rng([seed, nv, b])
        a = rng.integers(1, 2**b, size=(trials, nv), endpoint=True, dtype=np.int64)  # (trials, n)
        perfect = sum(is_perfect(row) for row in a)
        rows.append(
            {"n": nv, "b": b, "kappa": b / nv, "trials": trials, "perfect": perfect,
             "p_perfect": perfect / trials, "kappa_c_n": kappa_c(nv), "p_predicted": p_predicted(nv, b)}
        )  # fmt: skip
        if on_cell is not None:
            on_cell(len(rows), len(cells))
    return rows


def kappa_half(rows: list[dict], n: int, key: str = "p_perfect") -> float | None:
    """The kappa where P(perfect) first falls through 1/2 for this n (linear interpolation), or None.

    Args:
        rows: rows from `npp_experiment`.
        n: which n.
        key: "p_perfect" (measured) or "p_predicted".
    """
    pts = sorted((r["kappa"], r[key]) for r in rows if r["n"] == n)
    for (k0, p0), (k1, p1) in zip(pts, pts[1:]):
        if p0 >= 0.5 > p1:
            return k0 + (p0 - 0.5) / (p0 - p1) * (k1 - k0)
    return None


def plot_npp(rows: list[dict], path: str | Path) -> Path:
    """P(perfect) vs kappa per n with kappa_c(n) marked, and the same data against the window variable lambda.

    Args:
        rows: rows from `npp_experiment`.
        path: the PNG file (written atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, nv in enumerate(sorted({r["n"] for r in rows})):
        pts = sorted((r["kappa"], r["p_perfect"], r["b"]) for r in rows if r["n"] == nv)
        kap, p, b = (np.array(v) for v in zip(*pts))
        color = f"C{i}"
        ax.plot(kap, p, "o-", ms=3, color=color, label=f"n={nv}")
        fine = np.linspace(kap.min(), kap.max(), 200)
        ax.plot(fine, [p_predicted(nv, k * nv) for k in fine], "--", lw=1, color=color)
        ax.axvline(kappa_c(nv), ls=":", lw=1, color=color)
        lam = b - nv + math.log2(nv) / 2  # the Borgs-Chayes-Pittel window variable, in bits
        ax2.plot(lam, p, "o-", ms=3, color=color, label=f"n={nv}")
    ax.axvline(1.0, color="k", lw=1, label="kappa = 1")
    ax.set(xlabel="kappa = b / n", ylabel="P(perfect partition)", ylim=(-0.03, 1.03),
           title="dotted: kappa_c(n) = 1 - log2(n)/(2n); dashed: Poisson estimate")  # fmt: skip
    lam = np.linspace(-6, 6, 200)
    q = 2.0**-lam * math.sqrt(3 / (2 * math.pi))
    ax2.plot(lam, 1 - (np.exp(-q) + np.exp(-2 * q)) / 2, "k--", lw=1, label="Poisson estimate")
    ax2.set(xlabel="lambda = b - n + log2(n)/2 (bits)", ylabel="P(perfect partition)", ylim=(-0.03, 1.03),
            xlim=(-6, 6), title="finite-size collapse (Borgs, Chayes & Pittel 2001)")  # fmt: skip
    for a in (ax, ax2):
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    trials = rows[0]["trials"] if rows else 0
    fig.suptitle(f"Random number partitioning: n integers uniform in [1, 2^b] ({trials} trials per point)")
    fig.tight_layout()
    return save_figure(fig, path)
