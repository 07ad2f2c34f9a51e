"""`mole theory rss | npp`: the random subset sum and number partitioning experiments, written as CSV + PNG.

Typed stage functions: mole/cli.py turns each signature and docstring into its subcommand's flags.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mole.progress import StageProgress
from mole.theory.io import write_csv
from mole.theory.npp import kappa_c, kappa_half, npp_experiment, plot_npp
from mole.theory.rss import EXACT_MAX_N, Method, fit_scaling, n_needed, plot_rss, rss_experiment

# Defaults: each command runs in well under a minute on one CPU core. RSS stops at eps = 0.0005: the
# exact method's n <= 24 cannot reach P >= 0.99 below it.
RSS_N = tuple(range(1, EXACT_MAX_N + 1))
RSS_EPS = (0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 0.0005)
RSS_BITS = (None, 4, 8)
NPP_N = (10, 16, 22, 28)
LEVELS = (0.9, 0.99)


def _console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 120)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def rss_command(
    *,
    out: str = "runs/theory",
    n: Sequence[int] = RSS_N,
    eps: Sequence[float] = RSS_EPS,
    bits: Sequence[int | None] = RSS_BITS,
    trials: int = 1000,
    method: Method = "exact",
    targets: int = 201,
    seed: int = 0,
    progress: bool = True,
) -> int:
    """Random subset sum phase diagram and n = O(log 1/eps).

    For n samples uniform in [-1, 1] (or quantized to b bits: k/(2^(b-1)-1), k = round), the probability
    that every z in [-1, 1] is within eps of a subset sum, and the smallest n reaching P >= 0.9 / 0.99
    against log2(1/eps) with a fitted line (Lueker: O(log 1/eps)). Exact by default: the worst z is an
    end of [-1, 1] or the middle of the largest gap between sorted subset sums (continuous n <= 24);
    --method grid checks only --targets evenly spaced z (continuous n <= 40), which underestimates the
    error and so the n needed. Every row records its method. Writes OUT/rss.csv, OUT/rss_needed.csv,
    OUT/rss.png.

    Args:
        out: output folder
        n: sample counts (continuous: <= 24 exact, <= 40 grid), e.g. [8,12,16]
        eps: tolerances (> 0), e.g. [0.1,0.01]
        bits: distributions: null = continuous U[-1,1], 2..16 = quantized, e.g. [null,4,8]
        trials: random draws per point
        method: exact (every z in [-1, 1]) or grid (the --targets points only)
        targets: grid method: evenly spaced targets in [-1, 1], all to cover
        seed: base seed (trial t uses the seed (seed, t))
        progress: a progress bar on a terminal, else one line when done
    """
    start = time.perf_counter()
    with StageProgress("rss", unit="trials", enabled=progress) as on_trial:
        rows = rss_experiment(n, eps, bits, trials, targets, seed, method, on_trial)
    needed = [r for level in LEVELS for r in n_needed(rows, level)]
    folder = Path(out)
    paths = [write_csv(rows, folder / "rss.csv"), write_csv(needed, folder / "rss_needed.csv")]
    paths.append(plot_rss(rows, folder / "rss.png", LEVELS))
    seconds = time.perf_counter() - start

    dists = list(dict.fromkeys(r["dist"] for r in rows))
    covered = "every z in [-1, 1]" if method == "exact" else f"all {targets} grid targets"
    table = Table(title=f"smallest n with P({covered} eps-covered) >= {' / '.join(map(str, LEVELS))}")
    for col in ("eps", "log2(1/eps)", *dists):
        table.add_column(col, justify="right")
    cell = {(r["dist"], r["eps"], r["level"]): r["n_needed"] for r in needed}
    for e in sorted({r["eps"] for r in rows}, reverse=True):
        vals = [" / ".join(_fmt(cell[d, e, lv]) for lv in LEVELS) for d in dists]
        table.add_row(f"{e:g}", f"{math.log2(1 / e):.2f}", *vals)
    console = _console()
    console.print(table)
    for d in dists:
        for level in LEVELS:
            fit = fit_scaling([r for r in needed if r["level"] == level], d)
            if fit:
                console.print(
                    f"{d}, P>={level}: n_needed = {fit['slope']:.2f} log2(1/eps) + {fit['intercept']:.2f} "
                    f"(fit over {fit['points']} eps)"
                )
    console.print(f"{trials} trials, seed {seed}, {method} method: {seconds:.1f} s")
    for p in paths:
        console.print(f"wrote {p}")
    return 0


def npp_command(
    *,
    out: str = "runs/theory",
    n: Sequence[int] = NPP_N,
    kappa_min: float = 0.4,
    kappa_max: float = 1.6,
    trials: int = 400,
    seed: int = 0,
    progress: bool = True,
) -> int:
    """Number partitioning phase transition at kappa = 1.

    Probability that n integers uniform in [1, 2^b] have a perfect partition (discrepancy 0 or 1)
    against kappa = b/n: the phase transition near kappa_c(n) = 1 - log2(n)/(2n). Exact: a bitset DP for
    small sums, else meet in the middle (n <= 40). Writes OUT/npp.csv, OUT/npp.png.

    Args:
        out: output folder
        n: instance sizes (<= 40 for the exact meet-in-the-middle solver), e.g. [10,20,30]
        kappa_min: smallest kappa = b/n (every integer b is run)
        kappa_max: largest kappa = b/n
        trials: random instances per (n, b)
        seed: base seed (cell (n, b) uses the seed (seed, n, b))
        progress: a progress bar on a terminal, else one line when done
    """
    start = time.perf_counter()
    with StageProgress("npp", unit="(n, b) cells", enabled=progress) as on_cell:
        rows = npp_experiment(n, kappa_min, kappa_max, trials, seed, on_cell)
    folder = Path(out)
    paths = [write_csv(rows, folder / "npp.csv"), plot_npp(rows, folder / "npp.png")]
    seconds = time.perf_counter() - start

    table = Table(title="P(perfect partition) = 1/2 crossing, kappa = b/n")
    cols = (
        "n",
        "b range",
        "kappa_50 measured",
        "kappa_50 Poisson",
        "kappa_c(n) BCP",
        "P at min kappa",
        "P at max kappa",
    )
    for col in cols:
        table.add_column(col, justify="right")
    for nv in sorted({r["n"] for r in rows}):
        mine = sorted((r for r in rows if r["n"] == nv), key=lambda r: r["b"])
        table.add_row(
            str(nv), f"{mine[0]['b']}..{mine[-1]['b']}", _fmt(kappa_half(rows, nv)),
            _fmt(kappa_half(rows, nv, "p_predicted")), _fmt(kappa_c(nv)),
            _fmt(mine[0]["p_perfect"]), _fmt(mine[-1]["p_perfect"]),
        )  # fmt: skip
    console = _console()
    console.print(table)
    console.print(f"{trials} trials per point, seed {seed}: {seconds:.1f} s")
    for p in paths:
        console.print(f"wrote {p}")
    return 0
