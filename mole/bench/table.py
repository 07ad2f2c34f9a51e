"""The benchmark matrix's output: OUT/matrix.json, OUT/matrix.md (one table, cells x seeds, each figure
against its target, per-cell means) and OUT/plots/matrix.png (B2, B3 and B4 per cell and seed)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mole.bench.spec import Matrix, shown
from mole.eval.benchmarks import TARGETS, met
from mole.eval.plots import pyplot, save
from mole.io import atomic_path, write_json

B3_MAE = 0.03  # DESIGN section 5: B3 also asks MAE <= 0.03 and monotone prompts (not in TARGETS)
PARTS = {
    "above_frontier": "frontier",
    "as_novel": "novel",
    "as_diverse": "diverse",
    "as_accurate": "accurate",
}
NUMBERS = ("zoo_acc", "B2", "B3_spearman", "B3_mae", "B4", "B5", "train_seconds", "sample_seconds", "peak_mb")


def targets_met(row: Mapping) -> dict[str, bool]:
    """Each benchmark of one matrix row against its target (B3: Spearman, MAE and monotone together)."""
    return {
        "B2": met("B2", row["B2"]),
        "B3": met("B3", row["B3_spearman"]) and row["B3_mae"] <= B3_MAE and bool(row["B3_monotone"]),
        "B4": met("B4", row["B4"]),
        "B5": met("B5", row["B5"]),
    }


def cell_means(rows: Sequence[Mapping]) -> dict[str, dict]:
    """Per cell: the mean of each figure over its seeds, and how many seeds had monotone prompts."""
    out: dict[str, dict] = {}
    for name in dict.fromkeys(r["cell"] for r in rows):
        mine = [r for r in rows if r["cell"] == name]
        out[name] = {k: float(np.mean([r[k] for r in mine])) for k in NUMBERS}
        out[name]["B3_monotone"] = f"{sum(bool(r['B3_monotone']) for r in mine)}/{len(mine)}"
        out[name]["seeds"] = len(mine)
    return out


def mark(value: float, ok: bool, digits: int = 3) -> str:
    return "nan" if math.isnan(value) else f"{value:.{digits}f} {'✓' if ok else '✗'}"


def table_lines(rows: Sequence[Mapping], means: Mapping[str, Mapping]) -> list[str]:
    """The Markdown table: one line per cell and seed, then one per cell with its means."""
    (_, _, b2), (_, _, b3), (_, _, b4), (_, _, b5) = (TARGETS[b] for b in ("B2", "B3", "B4", "B5"))
    lines = [
        f"| cell | seed | params | zoo acc | B2 (≥ {b2}) | B3 ρ (≥ {b3}) | B3 MAE (≤ {B3_MAE}) | monotone "
        f"| B4 (≥ {b4}): parts met | B5 (≥ {b5}) | train s | sample s | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        parts = ", ".join(PARTS[k] for k, ok in r["B4_parts"].items() if ok) or "none"
        lines.append(
            f"| {r['cell']} | {r['seed']} | {r['params']} | {r['zoo_acc']:.3f} | {mark(r['B2'], met('B2', r['B2']))} "
            f"| {mark(r['B3_spearman'], met('B3', r['B3_spearman']))} | {mark(r['B3_mae'], r['B3_mae'] <= B3_MAE)} "
            f"| {'yes' if r['B3_monotone'] else 'no'} | {mark(r['B4'], met('B4', r['B4']), 2)}: {parts} "
            f"| {mark(r['B5'], met('B5', r['B5']), 2)} | {r['train_seconds']:.1f} | {r['sample_seconds']:.2f} "
            f"| {r['peak_mb']:.0f} |"
        )
    for name, m in means.items():
        lines.append(
            f"| **{name}** | mean of {m['seeds']} | | {m['zoo_acc']:.3f} | {mark(m['B2'], met('B2', m['B2']))} "
            f"| {mark(m['B3_spearman'], met('B3', m['B3_spearman']))} | {mark(m['B3_mae'], m['B3_mae'] <= B3_MAE)} "
            f"| {m['B3_monotone']} | {mark(m['B4'], met('B4', m['B4']), 2)} | {mark(m['B5'], met('B5', m['B5']), 2)} "
            f"| {m['train_seconds']:.1f} | {m['sample_seconds']:.2f} | {m['peak_mb']:.0f} |"
        )
    return lines


def plot_matrix(rows: Sequence[Mapping], path: Path) -> Path:
    """B2, B3 Spearman, B3 MAE and B4 per cell (x) and seed (marker), each with its target line."""
    plt = pyplot()
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    panels = [("B2", "B2: accuracy / SGD's", TARGETS["B2"][2]), ("B3_spearman", "B3: Spearman", TARGETS["B3"][2]),
              ("B3_mae", "B3: prompt MAE", B3_MAE), ("B4", "B4: memorization parts met", TARGETS["B4"][2])]  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    markers = "osD^v<>"
    for ax, (key, title, target) in zip(axes, panels):
        for j, seed in enumerate(seeds):
            mine = [r for r in rows if r["seed"] == seed]
            x = [cells.index(r["cell"]) + 0.12 * (j - (len(seeds) - 1) / 2) for r in mine]
            ax.scatter(x, [r[key] for r in mine], marker=markers[j % len(markers)], label=f"seed {seed}")
        ax.axhline(target, color="grey", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(cells)), cells, rotation=30, ha="right")
        ax.set_xlim(-0.5, len(cells) - 0.5)
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    return save(fig, path)


def write_tables(rows: Sequence[Mapping], m: Matrix, out: Path) -> Path:
    """Write OUT/matrix.json, OUT/matrix.md and OUT/plots/matrix.png; returns the JSON's path.

    Args:
        rows: one per cell and seed (mole.bench.matrix.record).
        m: the matrix they ran.
        out: the run folder.
    """
    rows = [{**r, "met": targets_met(r)} for r in rows]
    means = cell_means(rows)
    plot = plot_matrix(rows, out / "plots" / "matrix.png")
    targets = {**{b: list(TARGETS[b]) for b in ("B2", "B3", "B4", "B5")}, "B3_mae": ["B3_mae", "<=", B3_MAE]}
    write_json(out / "matrix.json", {"matrix": str(m.file), "preset": m.preset, "seeds": list(m.seeds),
                                     "cells": [c.name for c in m.cells], "targets": targets, "rows": rows,
                                     "means": means, "plot": str(plot)})  # fmt: skip
    memory = sorted({r["memory"] for r in rows})
    total = len(m.cells) * len(m.seeds)
    finished = f" ({len(rows)} of {total} finished)" if len(rows) < total else ""  # --table_only
    md = [
        f"# Benchmark matrix: {shown(m.file)}" + (f" (preset {m.preset})" if m.preset != "default" else ""),
        "",
        f"{len(m.cells)} cells × {len(m.seeds)} training seeds of the weight model, one recipe{finished}. "
        "✓ / ✗: the "
        "figure against its target (mole.eval.benchmarks.TARGETS; B3's MAE and monotone prompts from "
        "DESIGN §5). B4's parts met are named (frontier: above the noise / interpolation frontier at "
        "equal novelty; novel, diverse, accurate: no worse than the SGD members). Sample seconds: "
        f"sampling alone, every set. Peak MB: the process's peak resident set ({', '.join(memory)}) "
        "over the train and sample stages.",
        "",
        *table_lines(rows, means),
        "",
        f"![B2, B3 and B4 per cell and seed](plots/{plot.name})",
        "",
    ]
    with atomic_path(out / "matrix.md") as tmp:
        tmp.write_text("\n".join(md))
    return out / "matrix.json"
