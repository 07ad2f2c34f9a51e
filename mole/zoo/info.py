"""`mole zoo info`: counts and metric distributions per variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mole.zoo import store

SUMMARY_COLUMNS = [
    "member_id",
    "variant",
    "final",
    "step",
    "test_acc",
    "test_loss",
    "sparsity",
    "bits",
    "rank",
]


def zoo_summary(zoo: str | Path) -> dict:
    """Per variant: members, snapshots, and the final-snapshot test accuracy / loss distribution."""
    zoo = Path(zoo)
    manifest = store.verify_zoo(zoo)
    table = store.read_zoo(zoo, columns=SUMMARY_COLUMNS, verify=False).to_pydict()
    variants: dict[str, dict] = {}
    for i, variant in enumerate(table["variant"]):
        v = variants.setdefault(variant, {"members": set(), "rows": 0, "acc": [], "loss": []})
        v["members"].add(table["member_id"][i])
        v["rows"] += 1
        if table["final"][i]:
            v["acc"].append(table["test_acc"][i])
            v["loss"].append(table["test_loss"][i])
    out = {
        "zoo": str(zoo),
        "spec_hash": manifest["spec_hash"],
        "shards_done": len(manifest["shards"]),
        "shards_total": manifest.get("num_groups"),
        "rows": sum(v["rows"] for v in variants.values()),
        "variants": {},
    }
    for name, v in sorted(variants.items()):
        acc, loss = np.asarray(v["acc"]), np.asarray(v["loss"])
        out["variants"][name] = {
            "members": len(v["members"]),
            "snapshots": v["rows"],
            **_stats("test_acc", acc),
            **_stats("test_loss", loss),
        }
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


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"[bold]{summary['zoo']}[/]  spec {summary['spec_hash'][:12]}  "
        f"shards {summary['shards_done']}/{summary['shards_total']}  rows {summary['rows']}"
    )
    table = Table(title="final snapshots, test split")
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
