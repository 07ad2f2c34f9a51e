"""The report's PNG plots, each written atomically (temporary name, then rename)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mole.zoo.store import atomic_path


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, imported when a plot is drawn (it is slow to
    import, and setting the backend at import time would override a notebook's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> Path:
    """Write `fig` as PNG at `path` (folders created) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    pyplot().close(fig)
    return path


def plot_prompts(
    series: Mapping[str, tuple[np.ndarray, np.ndarray]], zoo_range: tuple[float, float], path: Path
) -> Path:
    """Prompted against achieved test accuracy, one scatter per set, with the diagonal over `zoo_range`.

    Args:
        series: set name -> (prompted (n,), achieved (n,)).
        zoo_range: (low, high) of the diagonal: the zoo's accuracy range.
        path: the PNG file.
    """
    fig, ax = pyplot().subplots(figsize=(5, 4.5))
    for name, (prompted, achieved) in series.items():
        ax.scatter(prompted, achieved, s=14, alpha=0.7, label=name)
    lo, hi = zoo_range
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="achieved = prompted")
    ax.set(xlabel="prompted test accuracy", ylabel="achieved test accuracy", title="Prompt alignment")
    ax.legend()
    return save(fig, path)


def plot_sparsity(curves: Mapping[str, dict[float, np.ndarray]], path: Path) -> Path:
    """Mean test accuracy (error bars: std) against sparsity, one curve per set or baseline.

    Args:
        curves: name -> {sparsity: accuracies (n,)}; an empty curve is left out.
        path: the PNG file.
    """
    fig, ax = pyplot().subplots(figsize=(6, 4.5))
    for name, levels in curves.items():
        if not levels:
            continue
        s = np.asarray(list(levels))
        m = np.asarray([v.mean() for v in levels.values()])
        e = np.asarray([v.std() for v in levels.values()])
        ax.errorbar(s, m, yerr=e, marker="o", capsize=3, label=name)
    ax.set(
        xlabel="sparsity (fraction of weights removed)",
        ylabel="test accuracy",
        title="Accuracy against sparsity",
    )
    ax.legend()
    ax.grid(alpha=0.3)
    return save(fig, path)


def plot_masks(values: Mapping[str, np.ndarray], path: Path, title: str) -> Path:
    """One bar per set of masks: mean test accuracy, error bar the std (an empty set shows 0).

    Args:
        values: bar name -> test accuracies (n,).
        path: the PNG file.
        title: the plot's title.
    """
    fig, ax = pyplot().subplots(figsize=(5.5, 4))
    names = list(values)
    ax.bar(names, [values[n].mean() if values[n].size else 0 for n in names],
           yerr=[values[n].std() if values[n].size else 0 for n in names], capsize=4)  # fmt: skip
    ax.set(ylabel="test accuracy", title=title)
    return save(fig, path)


def plot_memorization(
    nets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    curves: Mapping[str, np.ndarray],
    frontier: np.ndarray,
    path: Path,
) -> Path:
    """Test accuracy against novelty (max misprediction IoU with any training member, most novel on
    the left): one scatter per set of nets, each baseline family's curve in its scatter's colour, and
    the frontier (the better curve at each novelty) dashed.

    Args:
        nets: set name -> (max IoU (n,), accuracy (n,)), e.g. generated, SGD members, noisy copies.
        curves: baseline family (a key of `nets`) -> its (L, 2) points (median max IoU, mean accuracy).
        frontier: (K, 2) points of the frontier, by novelty.
        path: the PNG file.
    """
    fig, ax = pyplot().subplots(figsize=(6.5, 4.5))
    colours = {}
    for name, (novelty, acc) in nets.items():
        colours[name] = ax.scatter(novelty, acc, s=10, alpha=0.5, label=name).get_facecolor()[0][:3]
    for name, points in curves.items():
        ax.plot(
            points[:, 0], points[:, 1], "-o", lw=1.2, ms=4, color=colours.get(name), label=f"{name} curve"
        )
    if frontier.size:
        ax.plot(frontier[:, 0], frontier[:, 1], "k--", lw=1.5, label="frontier")
    ax.set(xlabel="max misprediction IoU with a training member (lower: more novel)",
           ylabel="test accuracy", title="Accuracy against novelty (Zeng et al.)")  # fmt: skip
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save(fig, path)
