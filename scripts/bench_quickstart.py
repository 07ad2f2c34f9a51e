"""Benchmarks B2-B8 from one `mole quickstart` run on digits (B8: the run's own wall time).

    python scripts/bench_quickstart.py --out runs/bench/quickstart.json [--run DIR] [--preset default]

Runs the whole pipeline into DIR (default: a fresh temporary folder, so B8 times a cold run; an
existing finished DIR is resumed and its recorded figures are reported), then prints and writes the
report's benchmark figures (results.json "benchmarks": acc_ratio B2, spearman_prompt B3, memorization_parts_met
B4 (Zeng et al.'s test), sparse_vs_baselines_met B5, mask_ratio_edge_popup B6, speedup_per_net B7, quickstart_seconds B8),
each with its target and whether it is met, and the stage timings. The details behind B5 and B6 are
scripts/bench_sparse.py and scripts/bench_masks.py (they read the same run).
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

from jsonargparse import auto_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing mole
from mole.eval.benchmarks import DESCRIPTIONS, TARGETS, met  # noqa: E402
from mole.pipeline import run_quickstart  # noqa: E402
from mole.zoo.store import write_json  # noqa: E402


def figures(run: Path) -> dict:
    results = json.loads((run / "results.json").read_text())
    out = {}
    for b, (key, op, target) in TARGETS.items():
        v = results["benchmarks"].get(key, math.nan)
        out[b] = {
            "figure": key,
            "value": v,
            "target": f"{op} {target}",
            "met": met(b, v),
            "what": DESCRIPTIONS[b],
        }
    return {"benchmarks": out, "stage_seconds": results["stage_seconds"], "preset": results["preset"]}


def main(*, out: str, run: str | None = None, preset: str = "default") -> None:
    """B2-B8 from one quickstart run (B8: its own wall time).

    Args:
        out: JSON file to write.
        run: quickstart run folder (default: a fresh temporary one, so B8 times a cold run).
        preset: the quickstart's preset: default or tiny.
    """
    with tempfile.TemporaryDirectory(prefix="bench_quickstart.") as tmp:
        run = Path(run) if run else Path(tmp) / "run"
        run_quickstart(run, preset, wandb="disabled", progress=False)
        result = {**figures(run), "run": str(run)}
    write_json(Path(out), result)
    for b, f in result["benchmarks"].items():
        print(
            f"{b}  {f['figure']:<26} {f['value']:>10.4f}  target {f['target']:<9} {'met' if f['met'] else 'NOT met'}"
        )


if __name__ == "__main__":
    auto_cli(main)
