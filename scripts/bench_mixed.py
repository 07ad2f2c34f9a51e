"""B10, one denoiser across architectures and tasks: B2 and B3 per cell of a mixed model, against the
dedicated models of the same cells when given.

    python scripts/bench_mixed.py --model runs/mixed/weights/model --out runs/bench/mixed.json
        [--dedicated '{"mlp {\"hidden\": [32, 32]} on digits": runs/digits_mlp/model, ...}']
        [--run runs/bench/mixed] [--steps 5] [--guidance 6] [--seed 1] [--prompts 8] [--per_prompt 4]

A cell is one (architecture, shape, task) the model trained on (mole.diffusion.cells; named as
`describe` names it). Per cell, from the zoos the model lists in mole.json:
    b2          one net per final SGD member of the cell (its variant), prompted with its accuracy
                (clamped to the model's range): mean test accuracy / the members' mean (B2's
                definition, mole.eval.benchmarks.acc_ratio)
    spearman, mae, monotone
                a sweep of `prompts` accuracies over the cell's own rows' range, `per_prompt` nets
                each (B3's, mole.eval.benchmarks.prompt_alignment)
    dedicated_b2, b10_ratio, b10_met
                with --dedicated: the same B2 prompts drawn from the cell's dedicated model, and
                b2 / dedicated_b2 against design.md's B10 target (>= 0.98)
Generated zoos are written under RUN (a rerun skips those already there). Prints the figures and
writes them as JSON, atomically.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from jsonargparse import auto_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing mole
from mole.diffusion.cells import TASK_FREE, cells_of, describe  # noqa: E402
from mole.diffusion.generated import generate_zoo  # noqa: E402
from mole.diffusion.model_dir import read_meta  # noqa: E402
from mole.diffusion.options import SampleOptions  # noqa: E402
from mole.errors import ConfigError  # noqa: E402
from mole.eval import load_rows  # noqa: E402
from mole.eval.benchmarks import acc_ratio, prompt_alignment  # noqa: E402
from mole.io import write_json  # noqa: E402

B10 = 0.98  # design.md section 5: per cell, B2 >= 0.98 x the dedicated model's


def cell_rows(zoos: list[str], cell: dict, final_only: bool) -> list[dict]:
    """The rows of a cell (its architecture, shape, task and variants) in the model's zoos."""
    options = json.dumps(cell["arch_config"], sort_keys=True)
    return [
        r
        for z in zoos
        for r in load_rows(z, final_only=final_only)
        if (r["architecture"], r["arch_options"], r["task"]) == (cell["architecture"], options, cell["task"])
        and r["variant"] in (cell["variants"] or [r["variant"]])
    ]


def main(
    *,
    model: str,
    out: str,
    dedicated: dict[str, str] | None = None,
    run: str = "runs/bench/mixed",
    steps: int = 5,
    guidance: float = 6.0,
    seed: int = 1,
    prompts: int = 8,
    per_prompt: int = 4,
) -> dict:
    """Draw every cell's B2 and B3 sets from a mixed model (and B2's from dedicated models), write the figures.

    Args:
        model: the mixed model folder (its mole.json lists the cells and zoos).
        out: JSON file to write.
        dedicated: cell name (as printed: describe(cell)) -> a model folder trained on that cell alone.
        run: folder for the generated zoos.
        steps, guidance, seed: sampling options (B3's sweep uses seed + 1).
        prompts, per_prompt: B3's sweep: accuracy levels, nets per level.
    """
    meta = read_meta(model)
    zoos = meta["zoo"] if isinstance(meta["zoo"], list) else [meta["zoo"]]
    lo, hi = meta["conditions"]["test_acc"]["min"], meta["conditions"]["test_acc"]["max"]
    known = cells_of(meta)
    names = [describe(s) for s in known]
    unknown = sorted(set(dedicated or {}) - set(names))
    if unknown:
        raise ConfigError("dedicated", f"no cell {unknown[0]!r}; the model's cells: {'; '.join(names)}")
    folder, cells = Path(run), {}
    t0 = time.perf_counter()
    for i, (s, name) in enumerate(zip(known, names)):
        sgd = cell_rows(zoos, s, final_only=True)
        every = cell_rows(zoos, s, final_only=False)
        shape = {k: v for k, v in s["arch_config"].items() if k not in TASK_FREE}
        told = {"architecture": s["architecture"], "task": s["task"], "arch_options": shape}
        told["variant"] = s["variants"][0] if s["variants"] and len(s["variants"]) == 1 else None
        told = {k: v for k, v in told.items() if v is not None}
        accs = [min(max(r["test_acc"], lo), hi) for r in sgd]
        options = SampleOptions(steps=steps, guidance=guidance, seed=seed)
        dense, _ = generate_zoo(model, folder / f"cell{i}-b2", {**told, "test_acc": accs}, len(accs), options)
        cell = {
            "b2": acc_ratio(load_rows(dense), sgd),
            "sgd_mean": float(np.mean([r["test_acc"] for r in sgd])),
        }
        c_lo, c_hi = max(lo, min(r["test_acc"] for r in every)), min(hi, max(r["test_acc"] for r in every))
        sweep = np.repeat(np.linspace(c_lo, c_hi, prompts), per_prompt).tolist()
        swept, _ = generate_zoo(
            model, folder / f"cell{i}-b3", {**told, "test_acc": sweep}, len(sweep), SampleOptions(
                steps=steps, guidance=guidance, seed=seed + 1)
        )  # fmt: skip
        cell.update(prompt_alignment(load_rows(swept)))
        if name in (dedicated or {}):
            own = {k: v for k, v in told.items() if k != "arch_options"}  # a one-cell model: no shape to pick
            alone, _ = generate_zoo(dedicated[name], folder / f"cell{i}-dedicated", {**own, "test_acc": accs},
                                    len(accs), options)  # fmt: skip
            cell["dedicated_b2"] = acc_ratio(load_rows(alone), sgd)
            cell["b10_ratio"] = cell["b2"] / cell["dedicated_b2"]
            cell["b10_met"] = bool(cell["b10_ratio"] >= B10)
        cells[name] = cell
    result = {
        "cells": cells,
        "b10_met": all(c["b10_met"] for c in cells.values()) if dedicated and len(dedicated) == len(cells) else None,
        "settings": {
            "model": model, "dedicated": dedicated or {}, "steps": steps, "guidance": guidance, "seed": seed,
            "prompts": prompts, "per_prompt": per_prompt, "seconds": time.perf_counter() - t0,
            "threads": torch.get_num_threads(),
        },
    }  # fmt: skip
    write_json(Path(out), result)
    print(json.dumps({k: v for k, v in result.items() if k != "settings"}, indent=1))
    print(f"target: per cell b2 >= {B10} x the dedicated model's (B10); B2 >= 0.97, B3 Spearman >= 0.95")
    return result


if __name__ == "__main__":
    auto_cli(main)
