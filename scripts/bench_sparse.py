"""Benchmark B5: generated sparse networks at 50/80/90% against one-shot magnitude pruning (no
fine-tuning) and IMP with rewinding, from a quickstart run.

    python scripts/bench_sparse.py --out runs/bench/sparse.json [--run runs/quickstart] [--preset default]

Runs (or resumes) `mole quickstart` into RUN, then per sparsity: mean test accuracy of the generated
networks (the dense weight model prompted with the top of its accuracy range at the preset's guidance,
projected onto the sparsity by global magnitude), of magnitude pruning,
of IMP (interpolated between its rounds' sparsities) and of random pruning, all from the same SGD
members; met when generated >= magnitude and >= 0.95 x IMP at every level.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing mole
from mole.eval import load_rows  # noqa: E402
from mole.eval.benchmarks import share_levels_met, sparse_levels, sparsity_curves  # noqa: E402
from mole.pipeline import run_quickstart  # noqa: E402
from mole.zoo.store import write_json  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--run", default="runs/quickstart", help="quickstart run folder (run or resumed)")
    p.add_argument("--preset", default="default", help="default or tiny")
    args = p.parse_args()
    run = Path(args.run)
    run_quickstart(run, args.preset, wandb="disabled", progress=False)
    curves = sparsity_curves(
        load_rows(run / "generated" / "sparse"), load_rows(run / "baselines" / "pruning")
    )
    levels = sparse_levels(curves)
    result = {"levels": levels, "met": share_levels_met(levels) == 1.0, "run": str(run)}
    write_json(Path(args.out), result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
