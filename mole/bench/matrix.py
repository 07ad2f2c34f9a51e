"""The benchmark matrix (DESIGN section 9): one recipe over cells x training seeds, resumable.

`run_matrix` reads a matrix file (mole.bench.spec) and runs, per cell, the quickstart's stages through
their own entry points, then writes the table (mole.bench.table):

    OUT/<cell>/zoo/                     the cell's zoo (mole.zoo.build.build_zoo)
    OUT/<cell>/baselines/pruning/       magnitude, random, IMP on its final dense members (one per cell:
                                        they do not depend on the weight model)
    OUT/<cell>/train/seed<S>/           the weight model (`mole train`, mole.pipeline.train_model) with
                                        seed_everything S; OUT/<cell>/train/cache the seeds' shared cache
    OUT/<cell>/seed<S>/generated/{dense,prompts,sparse}/   the B2, B3 and B5 sets, as the quickstart
    OUT/<cell>/seed<S>/eval/            `mole eval` (evaluate_zoos) on the three sets: report.md, results.json
    OUT/<cell>/seed<S>/measures.json    train seconds and peak memory, kept from the run that did the work
    OUT/matrix.json, OUT/matrix.md, OUT/plots/matrix.png
    OUT/matrix.log                      Lightning's and W&B's console lines (mole.quiet)

Every stage's folder is reused when complete, so a killed matrix rerun with the same command goes on
where it stopped, and a rerun of a finished one only rewrites the table. Train seconds and peak memory
are those of the run that did the work (a training killed midway and resumed counts its last part).

Peak memory is the process's peak resident set (VmHWM in /proc/self/status), reset to the current
resident set before each of the train and sample stages by writing 5 to /proc/self/clear_refs (Linux);
where that is not possible, resource.getrusage's ru_maxrss: the process's peak so far, an upper bound.
It counts torch's tensors, which tracemalloc (Python allocations only) would miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mole.baselines.run import run_baselines
from mole.bench.spec import Cell, Matrix, load_matrix, shown
from mole.bench.table import write_tables
from mole.data import load_task
from mole.diffusion.generated import generate_zoo, recipe_steps
from mole.diffusion.options import SampleOptions
from mole.errors import ConfigError
from mole.eval import benchmarks as bench
from mole.eval import load_rows
from mole.eval.run import evaluate_zoos
from mole.io import read_json, write_json
from mole.pipeline import member_snapshots, merged, run_config, train_model
from mole.quiet import chatter_to
from mole.zoo.build import build_zoo, default_processes
from mole.zoo.spec import ZooSpec

WANDB_MODES = ("offline", "online", "disabled")
LOG = "matrix.log"  # library chatter of every stage
SETS = ("dense", "prompts", "sparse")  # the generated sets, each a folder and an evaluate_zoos input
PRUNING = Path("baselines") / "pruning"  # a cell's pruning baselines, beside its zoo


# ---------------------------------------------------------------------------- peak memory
def reset_peak() -> str:
    """Reset the process's peak resident set to its current one; the method `peak_mb` then reads."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "VmHWM"
    except OSError:
        return "ru_maxrss"


def peak_mb(method: str) -> float:
    """The process's peak resident set in MB since `reset_peak` (VmHWM) or since it started (ru_maxrss)."""
    if method == "VmHWM":
        with open("/proc/self/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        return kb / 1024
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def measured(fn: Callable[[], Any]) -> tuple[Any, float, float, str]:
    """(fn(), wall seconds, peak MB, memory method) of one stage."""
    method = reset_peak()
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0, peak_mb(method), method


def stamp(path: Path) -> int | None:
    """A file's modification time (ns), None when missing: whether a stage rewrote its marker."""
    return path.stat().st_mtime_ns if path.is_file() else None


# ---------------------------------------------------------------------------- stages
def sample_sets(model: Path, out: Path, sgd: Sequence[dict], s: dict) -> tuple[dict[str, Path], bool]:
    """The B2, B3 and B5 sets, as the quickstart samples them (mole.pipeline.run_quickstart).

    Args:
        model: the weight model folder.
        out: the seed's generated/ folder.
        sgd: the zoo's final dense members (B2: one net per member, prompted with its accuracy).
        s: the recipe's sampling settings (configs/quickstart/sample.yaml).

    Returns:
        (set name -> its zoo folder, whether anything was sampled).
    """
    meta = read_json(model / "mole.json", "model metadata")
    lo, hi = meta["conditions"]["test_acc"]["min"], meta["conditions"]["test_acc"]["max"]
    acc = [min(max(r["test_acc"], lo), hi) for r in sgd]
    p, sp = s["prompts"], s["sparse"]
    sweep = np.repeat(np.linspace(lo, hi, p["prompts"]), p["per_prompt"]).tolist()
    levels = [x for x in sp["sparsities"] for _ in range(sp["per_sparsity"])]
    b2 = {"test_acc": acc, "variant": "dense"}
    # a list of step candidates: the one whose B2 and B3 draws clearly come closest to their prompts
    # on validation, for every set
    both = {"test_acc": acc + sweep, "variant": "dense"}
    w = recipe_steps(model, s["weights"], both, len(both["test_acc"]), s["dense"]["seed"], out)
    jobs = {
        "dense": (b2, len(acc), {**w, **s["dense"]}, None),
        "prompts": ({"test_acc": sweep, "variant": "dense"}, len(sweep), {**w, "seed": p["seed"]}, None),
        # the best nets the model knows (the top of its accuracy range), pruned to each level
        "sparse": ({"test_acc": hi, "variant": "dense"}, len(levels), {**w, "seed": sp["seed"]},
                   {"sparsity": levels}),
    }  # fmt: skip
    folders, any_sampled = {}, False
    for name, (conditions, num, options, project) in jobs.items():
        folders[name], sampled = generate_zoo(
            model, out / name, conditions, num, SampleOptions(**options), project=project
        )
        any_sampled |= sampled
    return folders, any_sampled


def fingerprint(folders: Sequence[Path]) -> dict[str, str]:
    """sha256 of each zoo folder's manifest: what an evaluation was run on."""
    return {str(f): hashlib.sha256((f / "manifest.json").read_bytes()).hexdigest() for f in folders}


def evaluate(sets: dict[str, Path], zoo: Path, pruning: Path, out: Path) -> dict:
    """`mole eval` on the seed's sets (reference: the zoo; baselines: the pruning run); its results.json.

    Skipped when OUT/done.json records the same inputs (zoo manifests), as a stage's folder is reused.
    """
    inputs = fingerprint([*sets.values(), zoo, pruning])
    done = out / "done.json"
    if not (done.is_file() and json.loads(done.read_text()) == inputs):
        evaluate_zoos([sets["dense"], sets["sparse"]], out, reference=zoo, baselines=[pruning], progress=False,
                      prompts=[sets["prompts"]])  # fmt: skip
        write_json(done, inputs)  # last: a kill before it reruns the evaluation
    return read_json(out / "results.json", "results")


def figure(results: dict, key: str, zoo: str) -> float:
    """A results.json figure of one zoo ("<key>/<zoo>" when several zoos share its section)."""
    b = results["benchmarks"]
    return float(b.get(f"{key}/{zoo}", b.get(key, float("nan"))))


def record(cell: Cell, seed: int, sgd: Sequence[dict], sets: dict[str, Path], results: dict,
           measures: dict) -> dict:  # fmt: skip
    """One row of the matrix: the cell and seed's figures (each from the function the report uses);
    `sgd` is the zoo's final dense rows."""
    b3 = bench.prompt_alignment(load_rows(sets["prompts"]))
    memo = results["memorization"]["dense"]
    sampled = [json.loads(r["extra"])["sampling_seconds"] for k in SETS for r in load_rows(sets[k])]
    drawn = json.loads(load_rows(sets["prompts"])[0]["extra"])
    return {
        "cell": cell.name,
        "seed": seed,
        "task": sgd[0]["task"],
        "architecture": sgd[0]["architecture"],
        "params": int(sgd[0]["num_params"]),
        "members": len(sgd),
        "zoo_acc": float(bench.accs(sgd).mean()),
        "B2": figure(results, "acc_ratio", "dense"),
        "B3_spearman": float(b3["spearman"]),
        "B3_mae": float(b3["mae"]),
        "B3_monotone": b3["monotone"],
        "B4": figure(results, "memorization_parts_met", "dense"),
        "B4_parts": memo["parts"],
        "B4_margin": [memo["margin"], *memo["interval"]],
        "B5": figure(results, "sparse_vs_baselines_met", "sparse"),
        "steps": drawn["steps"],  # the DDIM steps drawn at (a recipe's list: the one chosen) and where
        "timestep_spacing": drawn.get("timestep_spacing", "leading"),
        "train_seconds": measures["train"]["seconds"],
        "sample_seconds": float(np.sum(sampled)),  # sampling alone, as B7 counts it
        "peak_mb": max(measures["train"]["peak_mb"], measures["sample"]["peak_mb"]),
        "memory": measures["train"]["memory"],
        "report": str(sets["dense"].parents[1] / "eval" / "report.md"),
    }


def seed_folders(folder: Path, seed: int) -> tuple[Path, Path]:
    """A cell folder's (training run, everything after it) for one training seed (module docstring)."""
    return folder / "train" / f"seed{seed}", folder / f"seed{seed}"


def seed_config(m: Matrix, seed: int) -> dict[str, Any]:
    """The recipe's weights config at training seed `seed`, as `mole train CONFIG --seed_everything S`."""
    return merged(m.weights, {"seed_everything": seed})


def final_dense(zoo: Path) -> list[dict]:
    """The zoo's final dense members (the SGD nets every figure compares with)."""
    return [r for r in load_rows(zoo) if r["variant"] == "dense"]


def run_seed(m: Matrix, cell: Cell, seed: int, folder: Path, zoo: Path, pruning: Path, wandb: str,
             progress: bool, log: Callable[[str], None]) -> dict:  # fmt: skip
    """Train, sample and evaluate one cell at one training seed; its matrix row."""
    run, here = seed_folders(folder, seed)
    measures_file = here / "measures.json"
    measures = json.loads(measures_file.read_text()) if measures_file.is_file() else {}
    config = seed_config(m, seed)
    before = stamp(run / "done.json")
    model, seconds, peak, how = measured(lambda: train_model(zoo, run, config, wandb, progress))
    if stamp(run / "done.json") != before or "train" not in measures:  # it trained (or nothing was kept)
        measures["train"] = {"seconds": seconds, "peak_mb": peak, "memory": how}
        write_json(measures_file, measures)
    log(f"[{cell.name} seed {seed}] train {measures['train']['seconds']:.1f} s")
    sgd = final_dense(zoo)
    (sets, sampled), seconds, peak, how = measured(
        lambda: sample_sets(model, here / "generated", sgd, m.sample)
    )
    if sampled or "sample" not in measures:
        measures["sample"] = {"seconds": seconds, "peak_mb": peak, "memory": how}
    write_json(measures_file, measures)
    results = evaluate(sets, zoo, pruning, here / "eval")
    row = record(cell, seed, sgd, sets, results, measures)
    log(f"[{cell.name} seed {seed}] B2 {row['B2']:.3f}, B3 {row['B3_spearman']:.3f}, B4 {row['B4']:.2f}")
    return row


def same_recipe(a: dict, b: dict) -> bool:
    """Two run configs alike but for where their zoo and cache lie (a run folder copied or moved)."""

    def placeless(config: dict) -> dict:
        data = {k: v for k, v in config.get("data", {}).items() if k not in ("zoo", "cache_dir")}
        return {**config, "data": data}

    return placeless(a) == placeless(b)


def finished_row(m: Matrix, cell: Cell, seed: int, folder: Path, log: Callable[[str], None]) -> dict | None:
    """The row of one cell and seed read from `folder` when every stage of it is complete there (its
    model, the three generated sets, their evaluation on exactly those sets, the measures), else None.
    Runs nothing. A seed trained with another config than the matrix's recipe is kept, with a line to
    `log` naming it (its train/seed<S>/config.yaml says what it ran)."""
    (run, here), zoo, pruning = seed_folders(folder, seed), folder / "zoo", folder / PRUNING
    sets, done = {k: here / "generated" / k for k in SETS}, here / "eval" / "done.json"
    files = [run / "done.json", here / "measures.json", here / "eval" / "results.json", done]
    files += [f / "manifest.json" for f in (zoo, pruning, *sets.values())]
    if not all(f.is_file() for f in files):
        return None
    measures = read_json(here / "measures.json", "measures")
    evaluated = sorted(read_json(done, "evaluation").values())  # by content: the folder may have moved
    if not {"train", "sample"} <= set(measures) or evaluated != sorted(
        fingerprint([*sets.values(), zoo, pruning]).values()
    ):
        return None  # sampled again since it was evaluated: the evaluation is not of these sets
    config = run_config(seed_config(m, seed), zoo, run)
    if not same_recipe(read_json(run / "done.json", "training"), config):
        log(f"[{cell.name} seed {seed}] trained with another config than the recipe's: {run / 'config.yaml'}")
    results = read_json(here / "eval" / "results.json", "results")
    return record(cell, seed, final_dense(zoo), sets, results, measures)


def run_cell(m: Matrix, cell: Cell, folder: Path, wandb: str, progress: bool,
             log: Callable[[str], None]) -> list[dict]:  # fmt: skip
    """Build the cell's zoo and pruning baselines, then run every training seed; its matrix rows."""
    built = build_zoo(
        ZooSpec.from_dict(cell.zoo), folder / "zoo", progress=progress, processes=default_processes()
    )
    log(f"[{cell.name}] zoo: {len(built.built)} shard(s) built, {len(built.skipped)} done before")
    sgd = final_dense(built.zoo)
    data = load_task(sgd[0]["task"], **json.loads(sgd[0]["task_options"]))
    pruning = folder / PRUNING
    run_baselines(member_snapshots(built.zoo, sgd), data, m.baselines["pruning"], pruning, progress=progress)
    return [run_seed(m, cell, s, folder, built.zoo, pruning, wandb, progress, log) for s in m.seeds]


def run_matrix(
    matrix_file: str | Path,
    out: str | Path,
    cells: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    preset: str | None = None,
    progress: bool = True,
    wandb: str | None = None,
    log: Callable[[str], None] = print,
    table_only: bool = False,
) -> Path:
    """Run (or resume) a benchmark matrix into `out`; returns the path of OUT/matrix.json.

    With `table_only` it runs nothing: the table holds every chosen cell and seed finished in `out`,
    whichever command ran it (cells run side by side by separate commands, say), and names the others.

    Args:
        matrix_file: the matrix file (configs/matrix/matrix.yaml; mole.bench.spec).
        out: the run folder (see the module docstring).
        cells: only these cells, by name (default: every cell of the file).
        seeds: these training seeds instead of the file's.
        preset: merge each recipe file's override in the preset's folder beside it (e.g. "tiny").
        progress: progress bars.
        wandb: "offline", "online" or "disabled" for `mole train` (default: $WANDB_MODE, else offline).
        log: where one line per stage goes.
        table_only: only write the table from what is finished (see above).
    """
    m = load_matrix(matrix_file, cells, seeds, preset)
    if table_only:
        return table_of_finished(m, Path(out), log)
    env = os.environ.get("WANDB_MODE")
    wandb = wandb or (env if env in WANDB_MODES else "offline")
    if wandb not in WANDB_MODES:
        raise ConfigError("wandb", f"got {wandb!r}; valid: {', '.join(WANDB_MODES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with chatter_to(out / LOG):  # Lightning's and W&B's lines go to the log, the stage lines stay
        rows = [row for cell in m.cells for row in run_cell(m, cell, out / cell.name, wandb, progress, log)]
        log(f"library output: {out / LOG}")
        return write_tables(rows, m, out)


def table_of_finished(m: Matrix, out: Path, log: Callable[[str], None] = print) -> Path:
    """Write the table of every cell and seed of `m` finished in `out` (finished_row); the others are
    named in `log`. A ConfigError when none is."""
    rows = []
    for cell in m.cells:
        for seed in m.seeds:
            row = finished_row(m, cell, seed, out / cell.name, log)
            if row is None:
                log(f"[{cell.name} seed {seed}] not finished: left out of the table")
            else:
                rows.append(row)
    if not rows:
        raise ConfigError("out", f"{out}: no finished cell and seed of {shown(m.file)} to tabulate")
    return write_tables(rows, m, out)
