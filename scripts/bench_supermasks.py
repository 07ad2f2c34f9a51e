"""Benchmark issue 21 (B6 in full): supermasks for unseen random inits, per architecture x sparsity x
init distribution, and the over-parameterization table.

    python scripts/bench_supermasks.py --out runs/bench/supermasks.json [--archs [mlp,cnn]] [--inits 8]

For each architecture (digits MLP 64-64-64-10; digits CNN conv 8, conv 16, fc 32), a MaskRefiner is
trained across training inits (mole.masks.across_inits), then on `inits` unseen inits per cell (the
"test" seed stream, disjoint from training and validation) five masks are compared on the same
weights: a random layer-wise mask (the floor), the least-squares construction (the lsq_supermask
baseline), the refiner's rule untrained (`refine_steps` fixed steps along the mask gradient from the
construction: what the learning starts from), the learned refiner, and edge-popup (the edge_popup
baseline, trained `epochs` on each init), each with its wall seconds per mask (stacked, on this
machine); with a teacher (`--teacher_steps` or `--teacher_dir`), the learned refiner is distilled
from it and the teacher gets a sixth row. Targets: the learned masks >= the construction + 3 points at every sparsity of every
architecture; learned / edge-popup >= 0.95 at 50% and >= 0.90 at 80% (means over the init
distributions).

Plots beside the JSON: accuracy against sparsity per architecture, and against width.

The over-parameterization table: random MLPs 64-w-w-10 for w in `widths`, signed-constant inits at
`wide_sparsity`: edge-popup, the construction and the learned masks (the width-64 model applied as
it is: its features are per weight, so it reads any width).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing mole
from mole.baselines import run_baselines  # noqa: E402
from mole.baselines.base import full_row  # noqa: E402
from mole.cli import run_script  # noqa: E402
from mole.data import load_task  # noqa: E402
from mole.errors import ConfigError  # noqa: E402
from mole.eval.plots import plot_sparsity, pyplot, save  # noqa: E402
from mole.eval.report import table  # noqa: E402
from mole.masks.across_inits import (  # noqa: E402
    Draw,
    RefinerTraining,
    draw,
    masked_accuracy,
    train_refiner,
)
from mole.masks.construction import DEFAULTS, least_squares_scores, prior_data  # noqa: E402
from mole.masks.refiner import MaskProblem, MaskRefiner, refine  # noqa: E402
from mole.nets import Architecture, build_architecture  # noqa: E402
from mole.zoo import pruning  # noqa: E402
from mole.zoo.store import write_json  # noqa: E402
from mole.zoo.variants.supermask import INITS  # noqa: E402

ARCHS = {"mlp": {"hidden": [64, 64]}, "cnn": {"channels": [8, 16], "hidden": [32]}}
SPARSITIES = (0.5, 0.8, 0.9)
EDGE_POPUP = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0005, "batch_size": 32,
              "init_scale": 1.0}  # fmt: skip


def given_rows(arch: Architecture, d: Draw, epochs: int) -> list[dict]:
    """Zoo rows holding a draw's inits as init_params, as the baselines take given inits."""
    flat = arch.flatten(d.init)  # (B, P)
    return [
        full_row(
            {},
            zoo="bench",
            member_id=f"bench-{s}",
            member_index=i,
            variant="init",
            task="digits",
            task_options="{}",
            architecture=arch.name,
            arch_options=json.dumps(arch.config()),
            seed=s,
            step=0,
            final=True,
            epochs=epochs,
            params=flat[i].numpy(),
            init_params=flat[i].numpy(),
            extra=json.dumps({"init_seed": s}),
            **EDGE_POPUP,
        )  # fmt: skip
        for i, s in enumerate(d.seeds)
    ]


def refined_accuracy(model: MaskRefiner, arch, data, d: Draw) -> tuple[torch.Tensor, float]:
    """(test accuracy per init, seconds per mask) of a refiner's masks, the construction included."""
    began = time.perf_counter()
    x, y = prior_data(data, DEFAULTS["inputs"])
    with torch.no_grad():
        scores = least_squares_scores(arch, d.init, x, y, d.sparsity)
        refined = refine(model, MaskProblem(arch, d.init, scores, d.sparsity, x, y))
        masks = {k: pruning.topk_straight_through(v, d.sparsity) for k, v in refined.items()}
    seconds = (time.perf_counter() - began) / len(d.seeds)
    return masked_accuracy(arch, d.init, masks, data.x_test, data.y_test), seconds


def compare(
    arch,
    data,
    d: Draw,
    model: MaskRefiner,
    epochs: int,
    popup: bool = True,
    teacher: MaskRefiner | None = None,
) -> dict:
    """Test accuracy (mean, std) and seconds per mask of every method on one cell's inits (`teacher`:
    a row for the refiner the learned one was distilled from)."""
    n, s = len(d.seeds), float(d.sparsity[0])
    out: dict = {}
    began = time.perf_counter()
    masks = pruning.random_masks({k: d.init[k] for k in arch.weight_names()}, s, d.seeds, "layerwise")
    acc = masked_accuracy(arch, d.init, masks, data.x_test, data.y_test)
    out["random"] = (acc, (time.perf_counter() - began) / n)
    rows = given_rows(arch, d, epochs)
    built = run_baselines(rows, data, {"lsq_supermask": {"sparsity": s}}, group_size=n)
    seconds = float(np.mean([json.loads(r["extra"])["mask_seconds"] for r in built]))
    out["construction"] = (torch.tensor([r["test_acc"] for r in built]), seconds)
    c = model.config
    rule = MaskRefiner(1, c.steps, c.step_size, c.levels, c.families)  # untrained: zero correction
    out["rule"] = refined_accuracy(rule, arch, data, d)
    out["learned"] = refined_accuracy(model, arch, data, d)
    if teacher is not None:
        out["teacher"] = refined_accuracy(teacher, arch, data, d)
    if popup:
        began = time.perf_counter()
        trained = run_baselines(rows, data, {"edge_popup": {"sparsity": s}}, group_size=n)
        out["edge_popup"] = (
            torch.tensor([r["test_acc"] for r in trained]),
            (time.perf_counter() - began) / n,
        )
    return {
        k: {"mean": float(a.mean()), "std": float(a.std()), "seconds_per_mask": t}
        for k, (a, t) in out.items()
    }


def main(
    *,
    out: str,
    archs: list[str] = ["mlp", "cnn"],  # noqa: B006 (jsonargparse reads the default)
    inits: int = 8,
    dists: list[str] = list(INITS),  # noqa: B006
    sparsities: list[float] = list(SPARSITIES),  # noqa: B006
    epochs: int = 20,
    train_steps: int = 100,
    pool: int = 11,
    refine_steps: int = 32,
    step_size: float = 0.1,
    width: int = 16,
    lr: float = 1e-3,
    widths: list[int] = [64, 128, 256],  # noqa: B006
    wide_sparsity: float = 0.5,
    seed: int = 0,
    teacher_steps: int = 0,
    teacher_step_size: float = 0.1,
    teacher_train_steps: int = 120,
    teacher_dir: str | None = None,
    distill: float = 1.0,
    save_dir: str | None = None,
    context: bool = False,
    decay: bool = False,
    clip: float = 0.0,
    batch: int = 9,
) -> None:
    """Issue 21's tables: random / construction / learned / edge-popup per cell, and over-parameterization.

    Args:
        out: JSON file to write.
        archs: of mlp, cnn.
        inits: unseen inits per cell (architecture x sparsity x init distribution).
        dists: init distributions.
        sparsities: fractions of each weight tensor removed.
        epochs: edge-popup's epochs per init.
        train_steps: the refiner's training steps.
        pool: its training inits per (distribution, sparsity) pair (RefinerTraining.pool / pairs).
        refine_steps, step_size, width: the refiner's steps, fixed gradient step and MLP width.
        lr: the refiner's training learning rate.
        widths: hidden widths of the over-parameterization MLPs (empty: no table).
        wide_sparsity: their sparsity.
        seed: torch's seed for the refiner's init.
        teacher_steps: when > 0, first train a teacher refiner of this many steps (of
            `teacher_step_size`, `teacher_train_steps` training steps), then distill it into the
            learned refiner (RefinerTraining.distill); the teacher gets its own row.
        teacher_dir: instead, load the teacher of each architecture from TEACHER_DIR/<arch>_teacher
            (an earlier run's `save_dir`).
        distill: the teacher term's weight.
        save_dir: save each trained refiner to SAVE_DIR/<arch> (and a trained teacher to
            SAVE_DIR/<arch>_teacher), reloadable with MaskRefiner.from_pretrained.
        context: the learned refiner (not a teacher) also reads its neighbours' gradients and kept
            fractions (MaskRefiner's `context`).
        decay: anneal every refiner's learning rate to zero over its training (RefinerTraining.decay).
        clip: clip every refiner's gradient norm to this (RefinerTraining.clip; 0: off).
        batch: training inits per refiner step (RefinerTraining.batch; every (distribution,
            sparsity) pair equally often when a multiple of their number).
    """
    if teacher_dir is not None and teacher_steps > 0:
        raise ConfigError(
            "teacher_dir and teacher_steps",
            "give one (load a teacher, or train one: --teacher_steps 0 to load)",
        )
    for name in archs if teacher_dir is not None else ():
        if not (Path(teacher_dir) / f"{name}_teacher" / "config.json").is_file():
            raise ConfigError("teacher_dir", f"no saved teacher at {Path(teacher_dir) / f'{name}_teacher'}")
    data = load_task("digits")
    result: dict = {"settings": {"inits": inits, "dists": dists, "sparsities": sparsities, "epochs": epochs,
                                 "train_steps": train_steps, "pool": pool, "refine_steps": refine_steps,
                                 "step_size": step_size, "width": width, "lr": lr, "widths": widths, "wide_sparsity": wide_sparsity,
                                 "teacher_steps": teacher_steps, "teacher_step_size": teacher_step_size,
                                 "teacher_train_steps": teacher_train_steps, "teacher_dir": teacher_dir,
                                 "distill": distill, "context": context, "decay": decay, "clip": clip, "batch": batch, "torch_threads": torch.get_num_threads()},
                    "cells": [], "training": {}, "targets": [], "overparam": []}  # fmt: skip
    models, teachers = {}, {}
    for name in archs:
        arch = build_architecture(name, data.input_shape, data.num_classes, **ARCHS[name])

        def trained(steps: int, size: float, train: int, teacher=None, role="learned", name=name, arch=arch):
            torch.manual_seed(seed)
            options = RefinerTraining(steps=train, lr=lr, pool=pool * len(dists) * len(sparsities),
                                      dists=tuple(dists), sparsities=tuple(sparsities), distill=distill,
                                      decay=decay, clip=clip, batch=batch)  # fmt: skip
            refiner = MaskRefiner(width=width, steps=steps, step_size=size, levels=tuple(sparsities),
                                  families=tuple(dists), context=context and role == "learned")  # fmt: skip
            label = name if role == "learned" else f"{name} {role}"
            return train_refiner(refiner, arch, data, options, log=lambda e: print(label, e, flush=True),
                                 teacher=teacher)  # fmt: skip

        teacher = None
        if teacher_dir is not None:
            teacher = MaskRefiner.from_pretrained(
                Path(teacher_dir) / f"{name}_teacher", low_cpu_mem_usage=False
            )
        elif teacher_steps > 0:
            began = time.perf_counter()
            teacher, history = trained(teacher_steps, teacher_step_size, teacher_train_steps, role="teacher")
            result["training"][f"{name}_teacher"] = {
                "seconds": time.perf_counter() - began,
                "history": history,
            }
            if save_dir is not None:
                teacher.save_pretrained(Path(save_dir) / f"{name}_teacher")
        began = time.perf_counter()
        model, history = trained(refine_steps, step_size, train_steps, teacher)
        models[name], teachers[name] = model, teacher
        result["training"][name] = {"seconds": time.perf_counter() - began, "history": history}
        if save_dir is not None:
            model.save_pretrained(Path(save_dir) / name)
        for c, (dist, s) in enumerate((d, s) for s in sparsities for d in dists):
            d = draw(arch, "test", inits, [dist], [s], start=c * inits)  # fresh unseen inits per cell
            cell = {
                "arch": name,
                "sparsity": s,
                "init": dist,
                **compare(arch, data, d, model, epochs, teacher=teacher),
            }
            result["cells"].append(cell)
            print(json.dumps(cell), flush=True)
        for s in sparsities:
            cells = [c for c in result["cells"] if c["arch"] == name and c["sparsity"] == s]
            mean = {
                k: float(np.mean([c[k]["mean"] for c in cells]))
                for k in ("construction", "rule", "learned", "edge_popup", "teacher")
                if k in cells[0]
            }
            gain, ratio = 100 * (mean["learned"] - mean["construction"]), mean["learned"] / mean["edge_popup"]
            learned_points = 100 * (mean["learned"] - mean["rule"])
            want = {0.5: 0.95, 0.8: 0.90}.get(s)
            result["targets"].append({"arch": name, "sparsity": s, **mean, "gain_points": gain, "gain_met": gain >= 3,
                                      "learned_over_rule_points": learned_points,
                                      "ratio_edge_popup": ratio, "ratio_target": want,
                                      "ratio_met": None if want is None else ratio >= want})  # fmt: skip
    if widths and "mlp" in models:
        for w in widths:
            arch = build_architecture("mlp", data.input_shape, data.num_classes, hidden=[w, w])
            d = draw(arch, "test", inits, ["signed_constant"], [wide_sparsity], start=10_000 + w)
            row = {"width": w, **compare(arch, data, d, models["mlp"], epochs, teacher=teachers["mlp"])}
            result["overparam"].append(row)
            print(json.dumps(row), flush=True)
    result["plots"] = [str(p) for p in plots(result, Path(out))]
    write_json(Path(out), result)
    show(result)


METHODS = ("random", "construction", "rule", "learned", "edge_popup")


def methods(rows: list[dict]) -> tuple[str, ...]:
    """METHODS, and the teacher when the rows have one."""
    return METHODS + (("teacher",) if rows and "teacher" in rows[0] else ())


TARGET_COLUMNS = ("arch", "sparsity", "construction", "rule", "learned", "edge_popup", "gain_points", "gain_met",
                  "learned_over_rule_points", "ratio_edge_popup", "ratio_target", "ratio_met")  # fmt: skip


def plots(result: dict, out: Path) -> list[Path]:
    """Beside the JSON: per architecture, accuracy against sparsity for every method (error bars: the
    spread over init distributions); and accuracy against width for the over-parameterization table."""
    paths = []
    for name in dict.fromkeys(c["arch"] for c in result["cells"]):
        cells = [c for c in result["cells"] if c["arch"] == name]
        curves = {
            k: {
                s: np.array([c[k]["mean"] for c in cells if c["sparsity"] == s])
                for s in dict.fromkeys(c["sparsity"] for c in cells)
            }
            for k in methods(cells)
        }
        paths.append(plot_sparsity(curves, out.with_name(f"{out.stem}_{name}.png")))
    if result["overparam"]:
        fig, ax = pyplot().subplots(figsize=(6, 4.5))
        widths = [r["width"] for r in result["overparam"]]
        for k in methods(result["overparam"]):
            mean = [r[k]["mean"] for r in result["overparam"]]
            std = [r[k]["std"] for r in result["overparam"]]
            ax.errorbar(widths, mean, yerr=std, marker="o", capsize=3, label=k)
        ax.set(xscale="log", xlabel="hidden width of the random MLP", ylabel="test accuracy",
               title="Over-parameterization: masks of wider random nets")  # fmt: skip
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.legend()
        ax.grid(alpha=0.3)
        paths.append(save(fig, out.with_name(f"{out.stem}_widths.png")))
    return paths


def show(result: dict) -> None:
    """Print the tables as Markdown: cells (mean ± std over inits, seconds per mask), targets, widths."""

    def cell(c: dict, k: str) -> str:
        return f"{c[k]['mean']:.3f} ± {c[k]['std']:.3f} ({c[k]['seconds_per_mask']:.3g} s)"

    names = methods(result["cells"])
    cells = [[c["arch"], c["sparsity"], c["init"], *(cell(c, k) for k in names)] for c in result["cells"]]
    print(table(["arch", "sparsity", "init", *names], cells), end="\n\n")
    print(table(TARGET_COLUMNS, [[t[k] for k in TARGET_COLUMNS] for t in result["targets"]]), end="\n\n")
    if result["overparam"]:
        rows = [[r["width"], *(cell(r, k) for k in names)] for r in result["overparam"]]
        print(table(["width", *names], rows))


def run(argv: list[str] | None = None) -> int:
    """The command line: 0, or 2 with one line on stderr for bad input (as scripts/bench_matrix.py)."""
    return run_script(main, "bench_supermasks", argv)


if __name__ == "__main__":
    sys.exit(run())
