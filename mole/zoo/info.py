"""`mole zoo info`: counts and metric distributions per variant and per level, as a table and a PNG."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from mole.zoo import store

SERIES_AXES = ("sparsity", "bits", "rank", "round")  # levels along a curve, not separate curves
SUMMARY_COLUMNS = [
    "member_id",
    "variant",
    "variant_config",
    "final",
    "test_acc",
    "test_loss",
    "sparsity",
    "bits",
    "rank",
]


def zoo_summary(zoo: str | Path) -> dict:
    """Per variant and per variant level: members, snapshots and the final test accuracy / loss.

    Returns a JSON-serialisable dict with "variants" (one entry per variant) and "levels" (one entry
    per variant config, e.g. one per sparsity, with the achieved sparsity / bits / rank).
    """
    zoo = Path(zoo)
    manifest = store.verify_zoo(zoo)
    t = store.read_zoo(zoo, columns=SUMMARY_COLUMNS, verify=False).to_pydict()
    variants: dict[str, dict] = {}
    levels: dict[tuple[str, str], dict] = {}
    for i, variant in enumerate(t["variant"]):
        v = variants.setdefault(variant, {"members": set(), "rows": 0, "acc": [], "loss": []})
        v["members"].add(t["member_id"][i])
        v["rows"] += 1
        if not t["final"][i]:
            continue
        v["acc"].append(t["test_acc"][i])
        v["loss"].append(t["test_loss"][i])
        lv = levels.setdefault(
            (variant, t["variant_config"][i]), {"acc": [], "sparsity": [], "bits": set(), "rank": set()}
        )
        lv["acc"].append(t["test_acc"][i])
        lv["sparsity"].append(t["sparsity"][i])
        lv["bits"].add(t["bits"][i])
        lv["rank"].add(t["rank"][i])
    out = {
        "zoo": str(zoo),
        "spec_hash": manifest["spec_hash"],
        "shards_done": len(manifest["shards"]),
        "shards_total": manifest.get("num_groups"),
        "rows": sum(v["rows"] for v in variants.values()),
        "variants": {},
        "levels": [],
    }
    for name, v in sorted(variants.items()):
        out["variants"][name] = {
            "members": len(v["members"]),
            "snapshots": v["rows"],
            **_stats("test_acc", np.asarray(v["acc"])),
            **_stats("test_loss", np.asarray(v["loss"])),
        }
    for (variant, config), lv in sorted(levels.items()):
        bits, rank = sorted(lv["bits"] - {None}), sorted(lv["rank"] - {None})
        out["levels"].append(
            {
                "variant": variant,
                "config": json.loads(config) if config else {},
                "members": len(lv["acc"]),
                "sparsity": float(np.mean(lv["sparsity"])),
                "bits": bits[0] if len(bits) == 1 else None,
                "rank": rank[0] if len(rank) == 1 else None,
                **_stats("test_acc", np.asarray(lv["acc"])),
            }
        )

    def order(lv: dict) -> tuple:  # numeric levels in numeric order (rank 2 before rank 16)
        rest = {k: v for k, v in lv["config"].items() if k not in ("sparsity", "bits", "rank")}
        return (lv["variant"], level_label(rest), lv["bits"] or 0, lv["rank"] or 0, lv["sparsity"])

    out["levels"].sort(key=order)
    return out


def _stats(name: str, x: np.ndarray) -> dict:
    if len(x) == 0:
        return {}
    return {
        f"{name}_mean": float(x.mean()),
        f"{name}_std": float(x.std()),
        f"{name}_min": float(x.min()),
        f"{name}_median": float(np.median(x)),
        f"{name}_max": float(x.max()),
    }


def level_label(config: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(config.items())) or "-"


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(
        f"[bold]{summary['zoo']}[/]  spec {summary['spec_hash'][:12]}  "
        f"shards {summary['shards_done']}/{summary['shards_total']}  rows {summary['rows']}"
    )
    table = Table(title="members per variant (final snapshots, test split)")
    for col in ("variant", "members", "snapshots", "acc mean ± std", "acc min / median / max", "loss mean"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for name, v in summary["variants"].items():
        if "test_acc_mean" not in v:
            table.add_row(name, str(v["members"]), str(v["snapshots"]), "-", "-", "-")
            continue
        table.add_row(
            name,
            str(v["members"]),
            str(v["snapshots"]),
            f"{v['test_acc_mean']:.4f} ± {v['test_acc_std']:.4f}",
            f"{v['test_acc_min']:.4f} / {v['test_acc_median']:.4f} / {v['test_acc_max']:.4f}",
            f"{v['test_loss_mean']:.4f}",
        )
    console.print(table)
    levels = Table(title="accuracy per level")
    for col in ("variant", "level", "members", "sparsity", "bits", "rank", "acc mean ± std"):
        levels.add_column(col, justify="left" if col in ("variant", "level") else "right")
    for lv in summary["levels"]:
        levels.add_row(
            lv["variant"],
            level_label(lv["config"]),
            str(lv["members"]),
            f"{lv['sparsity']:.3f}",
            "-" if lv["bits"] is None else str(lv["bits"]),
            "-" if lv["rank"] is None else str(lv["rank"]),
            f"{lv['test_acc_mean']:.4f} ± {lv['test_acc_std']:.4f}",
        )
    console.print(levels)


def plot_summary(summary: dict, path: str | Path) -> Path:
    """Accuracy against sparsity, bits and rank (one panel each, where the zoo has such levels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_for = {"sparsity": [], "bits": [], "rank": []}
    for lv in summary["levels"]:
        if lv["bits"] is not None:
            axes_for["bits"].append(lv)
        elif lv["rank"] is not None:
            axes_for["rank"].append(lv)
        elif lv["sparsity"] > 0:
            axes_for["sparsity"].append(lv)
    panels = [k for k, v in axes_for.items() if v]
    if not panels:
        return _plot_histogram(summary, path)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    dense = summary["variants"].get("dense", {}).get("test_acc_mean")
    for ax, key in zip(axes[0], panels):
        by_variant: dict[str, list] = {}
        for lv in axes_for[key]:
            by_variant.setdefault(lv["variant"], []).append(lv)
        for variant, lvs in sorted(by_variant.items()):
            # one line per remaining option combination (e.g. scope=global vs layerwise)
            series: dict[str, list] = {}
            for lv in lvs:
                rest = {k: v for k, v in lv["config"].items() if k not in SERIES_AXES}
                series.setdefault(level_label(rest), []).append(lv)
            for label, pts in sorted(series.items()):
                pts.sort(key=lambda p: p[key])
                name = variant if label == "-" else f"{variant} {label}"
                ax.errorbar(
                    [p[key] for p in pts],
                    [p["test_acc_mean"] for p in pts],
                    yerr=[p["test_acc_std"] for p in pts],
                    marker="o",
                    capsize=3,
                    label=name,
                )
        if dense is not None:
            ax.axhline(dense, color="k", ls="--", lw=1, label="dense (mean)")
        ax.set_xlabel({"sparsity": "sparsity (fraction removed)", "bits": "bits", "rank": "rank"}[key])
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{Path(summary['zoo']).name}: final test accuracy per level")
    fig.tight_layout()
    return _save(fig, path)


def _plot_histogram(summary: dict, path: str | Path) -> Path:
    """A zoo without levels (e.g. dense only): the distribution of final test accuracies per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.8))
    for lv in summary["levels"]:
        ax.bar(
            " ".join([lv["variant"], *([level_label(lv["config"])] if lv["config"] else [])]),
            lv["test_acc_mean"],
            yerr=lv["test_acc_std"],
            capsize=4,
        )
    ax.set_ylabel("final test accuracy (mean ± std)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{Path(summary['zoo']).name}: final test accuracy")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    with store.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
