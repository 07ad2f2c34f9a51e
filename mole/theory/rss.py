"""Random subset sum: how many random weights a subset sum needs to hit every target within eps.

Lueker (1998, "Exponentially small bounds on the expected optimum of the partition and subset sum
problems", Random Structures & Algorithms 12) showed that n = O(log 1/eps) samples X_i ~ U[-1, 1]
suffice, with high probability, for *every* z in [-1, 1] to be eps-approximated by some subset sum
|z - sum_{i in S} X_i| <= eps. Pensia et al. (2020, "Optimal lottery tickets via SubsetSum:
logarithmic over-parameterization is sufficient", NeurIPS) use exactly this lemma to prove the strong
lottery ticket hypothesis with only a logarithmic width overhead; mole's subset-sum baseline builds
that construction.

The experiment: per trial draw X_1..X_nmax (seeded per trial, so the first n are the same for every
n: coverage can only improve as n grows, P(success) is monotone in n by construction, and the
continuous and quantized rows share their draws). A trial succeeds at (n, eps) when its coverage error
max_z min_S |z - sum_S X_i| is <= eps, with the max taken by one of two methods (each row says which):

- **exact** (the default): over every z in [-1, 1]. With the subset sums sorted, the worst z is an end
  of [-1, 1] or the midpoint of a gap between consecutive sums, so the error is
  max(d(-1), d(1), half the largest gap whose midpoint lies in [-1, 1]), d(z) the distance from z to
  the nearest sum (subset_sum.max_cover_distance derives it). Continuous: all 2^n sums, kept sorted
  while n grows (one linear merge per sample), so n <= EXACT_MAX_N.
- **grid**: over the `targets` points of linspace(-1, 1, targets) only. It underestimates the error by
  up to half the spacing (the distance is 1-Lipschitz in z), so it can only report a smaller n; with
  201 targets the spacing is 0.01, five times eps = 2^-9. Kept to reproduce old figures.

Quantization to b bits (b in 2..16): symmetric round-to-nearest, X -> k/m with k = rint(m X) and
m = 2^(b-1) - 1, so k in {-m, ..., m} (2^b - 1 levels, zero included; the two end levels get half
the mass of the others, as when quantizing uniform weights). Subset sums are then s/m for integers s,
so eps below the grid's floor (1/(2m) over every z, a little less on a grid of targets) is never
reached, whatever n.

Solvers (see subset_sum.py): sorted doubling (continuous, exact, n <= EXACT_MAX_N), meet in the middle
(continuous, grid, n <= 40), and a bitset DP over reachable integer sums for the quantized case, either
method (any n with 2 n m + 1 <= 2^26).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from mole.errors import ConfigError
from mole.theory.io import save_figure
from mole.theory.subset_sum import (
    DP_MAX_BITS,
    MITM_MAX_N,
    bitset_window,
    closest_sum_distance,
    max_cover_distance,
)

SUPPORTED_BITS = tuple(range(2, 17))
METHODS = ("exact", "grid")
EXACT_MAX_N = 24  # 2^24 sorted float64 sums: 128 MB, about 1 s per draw on one core
Method = Literal["exact", "grid"]
_TIE = 1e-9  # relative slack: on a quantized grid |z - s/m| == eps happens exactly, up to rounding


def dist_label(bits: int | None) -> str:
    return "continuous" if bits is None else f"{bits}-bit"


def quant_floor(bits: int, targets: int | None = None) -> float:
    """The smallest coverage error any n can reach on the b-bit grid: max_z min_s |z - s/m|.

    Args:
        bits: the bit-width.
        targets: None for every z in [-1, 1] (exact: 1/(2m)), else the number of evenly spaced targets.
    """
    m = 2 ** (bits - 1) - 1
    if targets is None:
        return 0.5 / m
    z = np.linspace(-1, 1, targets)
    return float(np.abs(z - np.rint(z * m) / m).max())


def _validate(n, eps, bits, trials, targets, method) -> None:
    if method not in METHODS:
        raise ConfigError("method", f"must be one of {list(METHODS)}, got {method!r}")
    if not n or any(int(v) != v or v <= 0 for v in n):
        raise ConfigError("n", f"must be a non-empty list of positive integers, got {list(n)}")
    if not eps or any(not e > 0 for e in eps):
        raise ConfigError("eps", f"must be a non-empty list of positive numbers, got {list(eps)}")
    if not bits or any(b is not None and b not in SUPPORTED_BITS for b in bits):
        raise ConfigError("bits", f"unsupported bit-width in {list(bits)}; valid: 2..16 or null (continuous)")
    if trials < 1:
        raise ConfigError("trials", f"must be >= 1, got {trials}")
    if targets < 2:
        raise ConfigError("targets", f"must be >= 2, got {targets}")
    if None in bits and method == "exact" and max(n) > EXACT_MAX_N:
        raise ConfigError(
            "n", f"{max(n)} exceeds the exact method's limit {EXACT_MAX_N} (2^n sorted sums; "
            f"the grid method goes to {MITM_MAX_N})"
        )  # fmt: skip
    if None in bits and max(n) > MITM_MAX_N:
        raise ConfigError(
            "n", f"{max(n)} exceeds the exact-solver limit {MITM_MAX_N} (continuous: meet in the middle)"
        )
    for b in bits:
        if b is not None and 2 * max(n) * (2 ** (b - 1) - 1) + 1 > DP_MAX_BITS:
            raise ConfigError("n", f"{max(n)} with {b} bits exceeds the DP limit of {DP_MAX_BITS} sums")


def _coverage_continuous(x, ns, stop_below, z) -> list[float]:
    """Coverage error max_z min_S |z - sum_S x| at each n (ascending): over z in [-1, 1], or the grid z.

    Once it is <= stop_below (the smallest eps), larger n cannot do worse (their subset sums include
    these), so the rest is reported as 0.0 without solving: the big n dominate the cost.
    """
    errs: list[float] = []
    sums, done = np.zeros(1), 0  # exact: the sorted subset sums of x[:done]
    for n in ns:
        if errs and errs[-1] <= stop_below * (1 + _TIE):
            errs.append(0.0)
        elif z is not None:
            errs.append(float(closest_sum_distance(x[:n], z).max()))
        else:
            for v in x[done:n]:
                # two sorted runs (without v, with v): the stable sort (timsort) merges them in linear time
                sums = np.concatenate([sums, sums + v])
                sums.sort(kind="stable")
            done = n
            errs.append(max_cover_distance(sums, -1.0, 1.0))
    return errs


def _coverage_quantized(x, ns, bits, z) -> list[float]:
    """Coverage error at each n (ascending) on the b-bit grid, with one incremental bitset DP."""
    m = 2 ** (bits - 1) - 1
    k = np.rint(x * m).astype(np.int64)
    offset = m * len(x)  # sums live in [-m n, m n]; bit s + offset
    reach, done, errs = 1 << offset, 0, []
    for n in ns:
        for v in k[done:n]:
            reach |= (reach << int(v)) if v >= 0 else (reach >> int(-v))
        done = n
        # 0 is always reachable, so the nearest sum to any z m in [-m, m] lies in [-2m, 2m]
        sums = bitset_window(reach, offset, -2 * m, 2 * m)  # sorted ints
        if z is None:
            errs.append(max_cover_distance(sums, -m, m) / m)
            continue
        q = z * m
        idx = np.searchsorted(sums, q)
        lo, hi = sums[np.clip(idx - 1, 0, len(sums) - 1)], sums[np.clip(idx, 0, len(sums) - 1)]
        errs.append(float(np.minimum(np.abs(q - lo), np.abs(q - hi)).max() / m))
    return errs


def coverage_errors(
    x: np.ndarray,
    ns: Sequence[int],
    bits: int | None,
    z: np.ndarray | None = None,
    stop_below: float = 0.0,
) -> list[float]:
    """Coverage error max_z min_S |z - sum_{i in S} q(x_i)| of the prefixes x[:n], n in `ns` (ascending).

    Args:
        x: the draws in [-1, 1], at least max(ns) of them.
        ns: prefix lengths, ascending (continuous and z None: each <= EXACT_MAX_N).
        bits: None (use x as is) or the bit-width q quantizes to (see the module docstring).
        z: None for the exact error over every z in [-1, 1]; else the grid of targets to check.
        stop_below: continuous only: once the error is <= this, later n are reported as 0.0 unsolved.
    """
    if bits is None:
        return _coverage_continuous(x, ns, stop_below, z)
    return _coverage_quantized(x, ns, bits, z)


def rss_experiment(
    n: Sequence[int],
    eps: Sequence[float],
    bits: Sequence[int | None] = (None,),
    trials: int = 200,
    targets: int = 201,
    seed: int = 0,
    method: Method = "exact",
    on_trial: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Success probability of covering [-1, 1] within eps by subset sums, per (distribution, n, eps).

    Args:
        n: sample counts (continuous: each <= EXACT_MAX_N for the exact method, <= 40 for the grid).
        eps: approximation tolerances, > 0.
        bits: distributions: None for U[-1, 1], an int b in 2..16 for its b-bit quantization.
        trials: independent draws per n (shared by all n and all distributions).
        targets: grid method: the number of evenly spaced targets in [-1, 1] that must all be covered.
        seed: base seed; trial t draws from numpy Generator seeded with (seed, t).
        method: "exact" (every z in [-1, 1]) or "grid" (the `targets` points only).
        on_trial: progress: called as on_trial(done, trials) after each trial.

    Returns:
        one dict per (bits, n, eps): dist, bits, n, eps, trials, successes, p_success, quant_floor,
        method, targets (None for the exact method).
    """
    ns, eps, bits = sorted(set(int(v) for v in n)), sorted(float(e) for e in eps), list(dict.fromkeys(bits))
    _validate(ns, eps, bits, trials, targets, method)
    grid = method == "grid"
    z = np.linspace(-1, 1, targets) if grid else None
    errs = {b: np.zeros((trials, len(ns))) for b in bits}  # coverage error per trial and n
    for t in range(trials):
        x = np.random.default_rng([seed, t]).uniform(-1, 1, ns[-1])
        for b in bits:
            errs[b][t] = coverage_errors(x, ns, b, z, stop_below=eps[0])
        if on_trial is not None:
            on_trial(t + 1, trials)
    rows = []
    for b in bits:
        floor = None if b is None else quant_floor(b, targets if grid else None)
        for j, nv in enumerate(ns):
            for e in eps:
                ok = int((errs[b][:, j] <= e * (1 + _TIE)).sum())
                rows.append(
                    {"dist": dist_label(b), "bits": b, "n": nv, "eps": e, "trials": trials,
                     "successes": ok, "p_success": ok / trials, "quant_floor": floor, "method": method,
                     "targets": targets if grid else None}
                )  # fmt: skip
    return rows


def n_needed(rows: list[dict], level: float) -> list[dict]:
    """Smallest n (among those run) with p_success >= level, per (distribution, eps); None if none.

    Args:
        rows: rows from `rss_experiment`.
        level: target success probability, e.g. 0.9 or 0.99.
    """
    best: dict[tuple, dict] = {}
    for r in sorted(rows, key=lambda r: r["n"]):
        key = (r["dist"], r["eps"])
        cell = best.setdefault(key, {"dist": r["dist"], "bits": r["bits"], "eps": r["eps"], "level": level,
                                     "log2_inv_eps": math.log2(1 / r["eps"]), "n_needed": None,
                                     "method": r.get("method", "grid")})  # fmt: skip
        if cell["n_needed"] is None and r["p_success"] >= level:
            cell["n_needed"] = r["n"]
    return list(best.values())


def _reached(needed: list[dict], dist: str) -> list[tuple[float, int]]:
    """(log2(1/eps), n_needed) for the eps of `dist` that some n reached."""
    return [
        (r["log2_inv_eps"], r["n_needed"]) for r in needed if r["dist"] == dist and r["n_needed"] is not None
    ]


def fit_scaling(needed: list[dict], dist: str = "continuous", min_points: int = 3) -> dict | None:
    """Least-squares line n_needed = slope * log2(1/eps) + intercept over the reached eps of one distribution.

    Args:
        needed: rows from `n_needed` (one level).
        dist: which distribution's rows to fit.
        min_points: fewer distinct eps reached than this gives None (two points always fit a line).

    Returns:
        {"slope", "intercept", "points"} or None.
    """
    pts = _reached(needed, dist)
    if len({x for x, _ in pts}) < max(2, min_points):
        return None
    slope, intercept = np.polyfit([x for x, _ in pts], [y for _, y in pts], 1)
    return {"slope": float(slope), "intercept": float(intercept), "points": len(pts)}


def plot_rss(rows: list[dict], path: str | Path, levels: Sequence[float] = (0.9, 0.99)) -> Path:
    """The RSS phase diagram: P(success) vs n per eps (one panel per distribution), and n needed vs log2(1/eps).

    Args:
        rows: rows from `rss_experiment`.
        path: the PNG file (written atomically).
        levels: success levels for the n-needed panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dists = list(dict.fromkeys(r["dist"] for r in rows))
    eps_all = sorted({r["eps"] for r in rows}, reverse=True)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(eps_all)))
    ncols = 2
    nrows = math.ceil((len(dists) + 1) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(11, 3.8 * nrows), squeeze=False)
    flat = list(axes.ravel())
    for ax, d in zip(flat, dists):
        for e, c in zip(eps_all, colors):
            pts = sorted((r["n"], r["p_success"]) for r in rows if r["dist"] == d and r["eps"] == e)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", color=c, label=f"eps={e:g}")
        floor = next(r["quant_floor"] for r in rows if r["dist"] == d)
        title = f"{d} X_i" + ("" if floor is None else f" (grid floor eps={floor:.3g})")
        ax.set(title=title, xlabel="n (samples)", ylabel="P(all targets eps-covered)", ylim=(-0.03, 1.03))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    ax = flat[len(dists)]
    for i, d in enumerate(dists):
        # one marker shape per distribution, filled for the first level: quantized points often coincide
        marker, color, shift = "os^vD"[i % 5], f"C{i}", 0.06 * i
        for level in levels:
            needed = n_needed(rows, level)
            pts = _reached(needed, d)
            ax.plot([p[0] + shift for p in pts], [p[1] for p in pts], marker, color=color,
                    mfc=color if level == levels[0] else "none", label=f"{d}, P>={level:g}")  # fmt: skip
            fit = fit_scaling(needed, d) if d == "continuous" else None
            if fit:
                xs = np.array([min(p[0] for p in pts), max(p[0] for p in pts)])
                ax.plot(xs, fit["slope"] * xs + fit["intercept"], "--", color=color, lw=1,
                        label=f"fit P>={level:g}: n = {fit['slope']:.2f} log2(1/eps) + {fit['intercept']:.1f}")  # fmt: skip
        floor = next(r["quant_floor"] for r in rows if r["dist"] == d)
        if floor:
            ax.axvline(math.log2(1 / floor), color=f"C{i}", ls=":", lw=1)
    ax.set(
        title="n needed (Lueker: O(log 1/eps)); dotted = grid floor",
        xlabel="log2(1/eps)",
        ylabel="smallest n",
    )
    ax.grid(alpha=0.3)
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi + 0.8 * (hi - lo))  # headroom: the legend sits above the rising points
    ax.legend(fontsize=7, loc="upper left")
    for extra in flat[len(dists) + 1 :]:
        extra.axis("off")
    trials = rows[0]["trials"] if rows else 0
    grid = rows[0].get("targets") if rows else None
    how = f"{grid} grid targets" if grid else "every z, exact"
    fig.suptitle(
        f"Random subset sum: covering [-1, 1] with subset sums of n uniform samples ({trials} trials, {how})"
    )
    fig.tight_layout()
    return save_figure(fig, path)
