"""Writing experiment rows as CSV and figures as PNG, both atomically (temp name + os.replace)."""

from __future__ import annotations

import csv
from pathlib import Path

from mole.io import atomic_path


def write_csv(rows: list[dict], path: str | Path) -> Path:
    """Write dict rows as CSV; the columns are the keys in first-seen order, None is written empty.

    Args:
        rows: the experiment's rows (all values str, int, float or None).
        path: the CSV file; written under a temporary name and renamed, so readers never see half a file.
    """
    path = Path(path)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="", lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return path


def save_figure(fig, path: str | Path) -> Path:
    """Save a matplotlib figure as PNG atomically and close it.

    Args:
        fig: the figure.
        path: the PNG file.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
