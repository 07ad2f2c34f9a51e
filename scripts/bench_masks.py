"""Benchmark B6: supermasks generated in one pass for unseen random inits at 50% sparsity, against
edge-popup trained on the very same inits (and random masks on them), from a quickstart run.

    python scripts/bench_masks.py --out runs/bench/masks.json [--run runs/quickstart] [--preset default]

Runs (or resumes) `mole quickstart` into RUN and pairs each generated mask with the edge-popup
member on the same init (by init seed): per-init accuracy ratio, the mean ratio and whether the mean
generated accuracy is >= 0.9 x edge-popup's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing mole
from mole.eval import load_rows  # noqa: E402
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
    gen = load_rows(run / "generated" / "masks")
    popup = load_rows(run / "baselines" / "edge_popup")
    by_init = {r["member_index"]: r for r in popup}
    pairs = [(g, by_init[g["member_index"]]) for g in gen if g["member_index"] in by_init]
    acc_g = np.asarray([g["test_acc"] for g, _ in pairs])
    acc_e = np.asarray([e["test_acc"] for _, e in pairs])
    acc_r = np.asarray([json.loads(e["extra"]).get("random_mask_test_acc", np.nan) for _, e in pairs])
    result = {
        "inits": len(pairs),
        "generated_mean": float(acc_g.mean()),
        "edge_popup_mean": float(acc_e.mean()),
        "random_mask_mean": float(np.nanmean(acc_r)),
        "ratio": float(acc_g.mean() / acc_e.mean()),
        "per_init_ratio": (acc_g / acc_e).round(4).tolist(),
        "met": bool(acc_g.mean() >= 0.9 * acc_e.mean()),
        "run": str(run),
    }
    write_json(Path(args.out), result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
