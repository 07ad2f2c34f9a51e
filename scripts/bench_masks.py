"""Benchmark B6: supermasks generated in one pass for unseen random inits at 50% sparsity, against
edge-popup trained on the very same inits (and random masks on them), from a quickstart run.

    python scripts/bench_masks.py --out runs/bench/masks.json [--run runs/quickstart] [--preset default]

Runs (or resumes) `mole quickstart` into RUN and pairs each generated mask with the edge-popup
member on the same init (by init seed): per-init accuracy ratio, the mean ratio (B6,
mole.eval.benchmarks.mask_ratio) and whether it meets its target.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jsonargparse import auto_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing mole
from mole.eval import benchmarks as bench  # noqa: E402
from mole.eval import load_rows  # noqa: E402
from mole.pipeline import run_quickstart  # noqa: E402
from mole.zoo.store import write_json  # noqa: E402


def main(*, out: str, run: str = "runs/quickstart", preset: str = "default") -> None:
    """B6 from a quickstart run: generated masks against edge-popup on the same inits.

    Args:
        out: JSON file to write.
        run: quickstart run folder (run or resumed).
        preset: the quickstart's preset: default or tiny.
    """
    run = Path(run)
    run_quickstart(run, preset, wandb="disabled", progress=False)
    gen = load_rows(run / "generated" / "masks")
    popup = bench.same_inits(gen, load_rows(run / "baselines" / "edge_popup"))
    by_init = {bench.init_seed(r): r for r in popup}
    pairs = [(g, by_init[bench.init_seed(g)]) for g in gen if bench.init_seed(g) in by_init]
    ratio = bench.mask_ratio(gen, popup)
    result = {
        "inits": len(pairs),
        "generated_mean": float(bench.accs(gen).mean()),
        "edge_popup_mean": float(bench.accs(popup).mean()),
        "random_mask_mean": float(bench.random_mask_accs(popup).mean()),
        "ratio": ratio,
        "per_init_ratio": [round(g["test_acc"] / e["test_acc"], 4) for g, e in pairs],
        "met": bench.met("B6", ratio),
        "run": str(run),
    }
    write_json(Path(out), result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    auto_cli(main)
