"""Benchmark B5: generated sparse networks at 50/80/90% against one-shot magnitude pruning (no
fine-tuning) and IMP with rewinding, from a quickstart run.

    python scripts/bench_sparse.py --out runs/bench/sparse.json [--run runs/quickstart] [--preset default]

Runs (or resumes) `mole quickstart` into RUN, then per sparsity: mean test accuracy of the generated
networks (the dense weight model prompted with the top of its accuracy range at the preset's guidance,
projected onto the sparsity by global magnitude), of magnitude pruning,
of IMP (interpolated between its rounds' sparsities) and of random pruning, all from the same SGD
members; met when generated >= magnitude and >= IMP at every level.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jsonargparse import auto_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing mole
from mole.eval import load_rows  # noqa: E402
from mole.eval.benchmarks import share_levels_met, sparse_levels, sparsity_curves  # noqa: E402
from mole.pipeline import run_quickstart  # noqa: E402
from mole.zoo.store import write_json  # noqa: E402


def main(*, out: str, run: str = "runs/quickstart", preset: str = "default") -> None:
    """B5 from a quickstart run: generated sparse nets against magnitude, IMP and random pruning.

    Args:
        out: JSON file to write.
        run: quickstart run folder (run or resumed).
        preset: the quickstart's preset: default or tiny.
    """
    run = Path(run)
    run_quickstart(run, preset, wandb="disabled", progress=False)
    curves = sparsity_curves(
        load_rows(run / "generated" / "sparse"), load_rows(run / "baselines" / "pruning")
    )
    levels = sparse_levels(curves)
    result = {"levels": levels, "met": share_levels_met(levels) == 1.0, "run": str(run)}
    write_json(Path(out), result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    auto_cli(main)
