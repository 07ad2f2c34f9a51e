"""`mole quickstart`: the whole pipeline on digits, from zoo to report, resumable stage by stage.

The recipe is configs/quickstart/ (zoo.yaml, weights.yaml, masks.yaml, sample.yaml, baselines.yaml,
and per preset a folder of overrides, e.g. tiny/); this module only reads it and runs the stages:

    zoo/                  the checkpoint zoo (zoo.yaml)
    diffusion/weights/    the weight model (`mole train weights.yaml`): its nets, and the sparse set
                          projected from them onto each sparsity by magnitude
    diffusion/masks/      the mask model over frozen random weights (`mole train masks.yaml`)
    generated/{dense,prompts,sparse,masks}/   sampled networks, zoo format (variant "generated")
    baselines/{pruning,edge_popup,lsq_supermask}/  magnitude, random, IMP on the zoo's final dense
                          members; edge-popup and the construction on the very inits the generated
                          masks were given
    subset_sum/ theory/   the strong-lottery-ticket construction and the random subset sum /
                          number partitioning experiments (CSV + PNG)
    results.json          every evaluator row, the stage timings and the B2-B8 figures
    report.md, plots/     the report (mole.eval.report)
    quickstart.log        the libraries' chatter (Lightning, W&B, datasets, their warnings), kept off
                          the console, which shows one line per stage (and progress bars on a terminal)

Every stage writes its folder atomically and is skipped when its output is already complete, so a
killed quickstart rerun with the same command goes on where it stopped.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mole.baselines.base import architecture_of, plan_of
from mole.baselines.run import run_baselines
from mole.baselines.subset_sum import plot_subset_sum, subset_sum_experiment
from mole.data import load_task
from mole.diffusion.generated import generate_zoo, recipe_steps
from mole.diffusion.options import SampleOptions, check_sample_recipe
from mole.diffusion.train import cli_main
from mole.errors import ConfigError
from mole.eval import load_rows
from mole.eval.base import rows_at
from mole.eval.inputs import ReportInputs, ZooSet, load_theory
from mole.eval.run import write_report
from mole.io import atomic_path, read_json, write_json
from mole.progress import StageProgress, on_terminal
from mole.quiet import chatter_to
from mole.theory.io import write_csv
from mole.theory.npp import npp_experiment, plot_npp
from mole.theory.rss import plot_rss, rss_experiment
from mole.zoo.build import build_zoo, default_processes
from mole.zoo.spec import ZooSpec
from mole.zoo.train import train_stacked

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "quickstart"  # the repository's recipe
LOG = "quickstart.log"  # in the run folder: the libraries' chatter
PARTS = ("zoo", "weights", "masks", "sample", "baselines")


# ---------------------------------------------------------------------------- the recipe
def merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `over` laid on top: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        out[key] = merged(old, value) if isinstance(old, Mapping) and isinstance(value, Mapping) else value
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file holding a mapping; a ConfigError naming the file otherwise."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError("recipe", f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError("recipe", f"{path}: must hold a mapping, got {type(raw).__name__}")
    return raw


@dataclass(frozen=True)
class Recipe:
    """The quickstart's recipe, one mapping per file of the recipe folder, the preset's overrides merged.

    Args:
        zoo: the zoo spec (mole.zoo.spec.ZooSpec.from_dict).
        weights, masks: `mole train` configs (LightningCLI: model, data, trainer).
        sample: which networks are drawn and how (sampling options per model, sets, seeds).
        baselines: the baselines' and the theory experiments' settings.
        preset: the overrides' name ("default": none).
    """

    zoo: dict
    weights: dict
    masks: dict
    sample: dict
    baselines: dict
    preset: str = "default"


def load_recipe(preset: str = "default", folder: str | Path | None = None) -> Recipe:
    """Read a recipe folder (default: the repository's configs/quickstart) at a preset.

    Args:
        preset: "default", or the name of a subfolder whose files override the recipe's (e.g. "tiny").
        folder: the recipe folder: zoo.yaml, weights.yaml, masks.yaml, sample.yaml, baselines.yaml.
    """
    folder = Path(folder) if folder is not None else RECIPE
    if not folder.is_dir():
        raise ConfigError(
            "recipe", f"{folder} is not a folder (a copy of the repository's configs/quickstart)"
        )
    presets = ["default", *sorted(p.name for p in folder.iterdir() if p.is_dir())]
    if preset not in presets:
        raise ConfigError("preset", f"unknown {preset!r}; valid: {', '.join(presets)}")
    parts = {}
    for name in PARTS:
        path = folder / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError("recipe", f"{path} is missing")
        parts[name] = read_yaml(path)
        override = folder / preset / f"{name}.yaml"
        if preset != "default" and override.is_file():
            parts[name] = merged(parts[name], read_yaml(override))
    check_sample_recipe(parts["sample"], f"{folder / 'sample.yaml'} at preset {preset!r}")
    return Recipe(**parts, preset=preset)


# ---------------------------------------------------------------------------- stages
def run_config(config: Mapping[str, Any], zoo: Path, run: Path) -> dict[str, Any]:
    """The config a run trains with and records in its done.json: `config` on `zoo`, with the data
    cache shared by the run folders beside `run`."""
    return merged(config, {"data": {"zoo": str(zoo), "cache_dir": str(run.parent / "cache")}})


def train_model(zoo: Path, run: Path, config: Mapping[str, Any], wandb: str, progress: bool) -> Path:
    """Train (or resume, or find done) one model through `mole train`'s LightningCLI; the model folder.

    Args:
        zoo: the zoo it trains on (replaces the config's data.zoo).
        run: the run folder: config.yaml, checkpoints/, csv/, model/, done.json.
        config: a `mole train` config (the recipe's weights or masks).
        wandb: "offline", "online" or "disabled".
        progress: Lightning's progress bar.
    """
    config = run_config(config, zoo, run)
    model = run / "model"
    done = run / "done.json"
    if done.is_file() and model.is_dir() and json.loads(done.read_text()) == config:
        return model
    run.mkdir(parents=True, exist_ok=True)
    with atomic_path(run / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    cli_main([str(run / "config.yaml"), "--run_dir", str(run), "--wandb", wandb,
              "--trainer.enable_progress_bar", str(progress).lower()])  # fmt: skip
    write_json(done, config)  # atomic: a kill leaves no half-written marker
    return model


def sgd_seconds_per_step(zoo: Path, steps: int = 60, repeats: int = 5) -> float:
    """Wall seconds of one SGD step of ONE network (a dense member's hyperparameters, trained alone).

    The median over `repeats` timed runs of about `steps` steps each, after one untimed run that warms
    the allocator and kernels up: a single short run varied by +-30 % between quickstart runs on the
    same machine, and B7 is this figure's multiple.
    """
    row = next(r for r in load_rows(zoo) if r["variant"] == "dense")
    arch, plan = architecture_of(row), plan_of(row)
    data = load_task(row["task"], **json.loads(row["task_options"]))
    one_epoch = max(1, len(data.y_train) // plan.batch_size)
    plan = plan.__class__(**{**plan.__dict__, "epochs": max(1, -(-steps // one_epoch))})
    seconds = []
    for _ in range(repeats + 1):
        params = arch.init_stacked([row["seed"]], [row["init_scale"]])
        t0 = time.perf_counter()
        train_stacked(
            arch.forward_stacked,
            params,
            data,
            [plan],
            grads=arch.loss_grads_stacked,  # as the zoo trains
        )
        seconds.append((time.perf_counter() - t0) / (plan.epochs * one_epoch))
    return float(np.median(seconds[1:]))


class Stages:
    """Runs and times the stages, recording each finished stage's seconds in OUT/stages.json.

    A resumed run calls every stage again (each returns at once when its output is complete) but
    keeps the seconds recorded by the run that did the work, so the total (B8) stays the time the
    pipeline took, not the time a rerun took to find everything done. A stage killed midway is
    recorded by the run that finishes it (its time then counts only the remaining part).
    """

    def __init__(self, out: Path, preset_name: str, log: Callable[[str], None]):
        self.path, self.preset, self.log = out / "stages.json", preset_name, log
        old = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.seconds: dict[str, float] = {k: v for k, v in old.get("seconds", {}).items() if k != "total"}

    def __call__(self, name: str, fn: Callable[[], Any], record: bool = True) -> Any:
        t0 = time.perf_counter()
        result = fn()
        took = time.perf_counter() - t0
        if name in self.seconds and record:
            self.log(f"[{name}] done before ({self.seconds[name]:.1f} s then, {took:.1f} s now)")
        else:
            self.log(f"[{name}] {took:.1f} s")
            if record:
                self.seconds[name] = took
                self.write(complete=False)
        return result

    def write(self, complete: bool) -> None:
        seconds = {**self.seconds, **({"total": sum(self.seconds.values())} if complete else {})}
        write_json(self.path, {"preset": self.preset, "seconds": seconds, "complete": complete})


def run_quickstart(
    out: str | Path = "runs/quickstart",
    preset_name: str = "default",
    wandb: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    recipe: str | Path | None = None,
) -> Path:
    """Run (or resume) the whole pipeline into `out`; returns the report's path.

    Args:
        out: run folder.
        preset_name: "default" or a preset folder of the recipe ("tiny").
        wandb: "offline", "online" or "disabled" (default: $WANDB_MODE, else offline).
        progress: progress bars (on a terminal; elsewhere the stage lines alone).
        log: where stage lines go.
        recipe: the recipe folder (default: the repository's configs/quickstart).
    """
    r = load_recipe(preset_name, recipe)
    wandb = wandb or (
        os.environ.get("WANDB_MODE")
        if os.environ.get("WANDB_MODE") in ("offline", "online", "disabled")
        else "offline"
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with chatter_to(out / LOG):
        return _run_stages(r, out, preset_name, wandb, progress and on_terminal(), log)


def _run_stages(
    r: Recipe, out: Path, preset_name: str, wandb: str, progress: bool, log: Callable[[str], None]
) -> Path:
    """The stages of `run_quickstart` (same arguments, `progress` meaning bars on this terminal)."""
    stage = Stages(out, preset_name, log)

    zoo = stage("zoo", lambda: build_zoo(ZooSpec.from_dict(r.zoo), out / "zoo", progress=progress,
                                         processes=default_processes()).zoo)  # fmt: skip
    finals = load_rows(zoo)
    dense = [r for r in finals if r["variant"] == "dense"]
    data = load_task(dense[0]["task"], **json.loads(dense[0]["task_options"]))

    # One weight model, on dense rows alone; the sparse set is its nets projected onto each sparsity.
    weights = stage(
        "train weights", lambda: train_model(zoo, out / "diffusion" / "weights", r.weights, wandb, progress)
    )
    masks = stage(
        "train masks", lambda: train_model(zoo, out / "diffusion" / "masks", r.masks, wandb, progress)
    )

    s = r.sample
    meta = json.loads((weights / "mole.json").read_text())
    lo, hi = meta["conditions"]["test_acc"]["min"], meta["conditions"]["test_acc"]["max"]
    timings: dict[str, float] = {}

    def gen(name: str, model: Path, conditions: dict, num: int, options: dict, **kw) -> list[dict]:
        with StageProgress(f"sampling {name}", enabled=progress, summary=False) as on_step:
            folder, sampled = generate_zoo(
                model,
                out / "generated" / name,
                conditions,
                num,
                SampleOptions(**options),
                on_step=on_step,
                **kw,
            )
        rows = load_rows(folder)
        if sampled:  # the sampling itself (not loading the model, not writing); a resumed run keeps it
            timings[name] = sum(json.loads(r["extra"])["sampling_seconds"] for r in rows)
        return rows

    def sample_all() -> dict[str, list[dict]]:
        acc = [min(max(r["test_acc"], lo), hi) for r in dense]  # B2: one net per SGD member, its accuracy
        b2 = {"test_acc": acc, "variant": "dense"}
        prompts = s["prompts"]
        sweep = np.repeat(np.linspace(lo, hi, prompts["prompts"]), prompts["per_prompt"]).tolist()  # B3
        # a list of step candidates: the one whose B2 and B3 draws clearly come closest to their
        # prompts on validation, for every set
        both = {"test_acc": acc + sweep, "variant": "dense"}
        w = recipe_steps(
            weights, s["weights"], both, len(both["test_acc"]), s["dense"]["seed"], out / "generated"
        )
        dense_opts = {**w, **s["dense"]}
        sparse = s["sparse"]
        levels = [x for x in sparse["sparsities"] for _ in range(sparse["per_sparsity"])]
        supermasks = s["supermasks"]
        return {
            "dense": gen("dense", weights, b2, len(acc), dense_opts),
            **{f"dense-t{t}": gen(f"dense-t{t}", weights, b2, len(acc),
                                  {**dense_opts, "temperature": t}) for t in s["temperatures"]},
            "prompts": gen("prompts", weights, {"test_acc": sweep, "variant": "dense"}, len(sweep),
                           {**w, "seed": prompts["seed"]}),
            # the sparse set: the best nets the model knows (the top of its accuracy range), pruned
            "sparse": gen("sparse", weights, {"test_acc": hi, "variant": "dense"}, len(levels),
                          {**w, "seed": sparse["seed"]}, project={"sparsity": levels}),
            "masks": gen("masks", masks, {"sparsity": supermasks["sparsity"]}, supermasks["num"],
                         {**s["masks"], "seed": supermasks["seed"]}),
        }  # fmt: skip

    generated = stage("sample", sample_all)
    b = r.baselines

    def baselines() -> dict[str, list[dict]]:
        pruning = run_baselines(
            member_snapshots(zoo, dense), data, b["pruning"], out / "baselines" / "pruning", progress=progress
        )
        # Generated rows carry no training hyperparameters; edge-popup trains their inits with the
        # zoo's own (batch size, optimizer ...) from a supermask member, and its variant's options.
        hp = next(r for r in finals if r["variant"] == "supermask")
        keys = ("optimizer", "lr", "weight_decay", "momentum", "batch_size", "epochs", "init_scale")
        given = [{**r, **{k: hp[k] for k in keys}} for r in generated["masks"]]
        popup = run_baselines(
            given, data, {"edge_popup": b["edge_popup"]}, out / "baselines" / "edge_popup", progress=progress
        )
        built = run_baselines(  # the closed-form construction on the same inits: what a mask model must beat
            given, data, {"lsq_supermask": b["lsq_supermask"]}, out / "baselines" / "lsq_supermask",
            progress=progress,
        )  # fmt: skip
        return {"pruning": pruning, "edge_popup": popup, "lsq_supermask": built}

    stage("baselines", baselines)

    def theory() -> None:
        folder = out / "theory"
        folder.mkdir(parents=True, exist_ok=True)
        settings = {k: b[k] for k in ("rss", "npp", "subset_sum")}
        done = folder / "rows.json"
        if done.is_file() and json.loads(done.read_text()).get("settings") == settings:
            return
        with StageProgress("rss trials", enabled=progress, summary=False) as on_trial:
            rss = rss_experiment(**b["rss"], on_trial=on_trial)
        write_csv(rss, folder / "rss.csv")
        plot_rss(rss, folder / "rss.png")
        npp = npp_experiment(**b["npp"])
        write_csv(npp, folder / "npp.csv")
        plot_npp(npp, folder / "npp.png")
        target = dense[0]  # the zoo's first final dense member
        with StageProgress("subset-sum tickets", enabled=progress, summary=False) as on_n:
            ss = subset_sum_experiment(target, data, b["subset_sum"]["n"], b["subset_sum"]["seed"], on_n=on_n)
        (out / "subset_sum").mkdir(exist_ok=True)
        write_csv(ss, out / "subset_sum" / "subset_sum.csv")
        plot_subset_sum(ss, out / "subset_sum" / "subset_sum.png", title=f"target {target['member_id']}")
        write_json(done, {"rss": rss, "npp": npp, "subset_sum": ss, "settings": settings})

    stage("theory", theory)
    if not (out / "sgd_timing.json").is_file():
        stage(
            "sgd timing",
            lambda: write_json(
                out / "sgd_timing.json", {"seconds_per_step": sgd_seconds_per_step(zoo, **b["sgd_timing"])}
            ),
        )
    timing_file = out / "generated" / "timings.json"
    if timings or not timing_file.is_file():
        old = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
        write_json(timing_file, {**old, **timings})
    stage.write(complete=True)

    def report() -> Path:
        with StageProgress("evaluating", enabled=progress, summary=False) as on_part:
            return report_from_run(out, wandb, on_part)

    return stage("report", report, record=False)


def report_from_run(
    out: str | Path, wandb: str = "disabled", on_part: Callable[[int, int], None] | None = None
) -> Path:
    """(Re)write OUT/report.md, OUT/plots and OUT/results.json from a finished quickstart run folder.

    The run's folders fill the report's roles (mole.eval.inputs.ReportInputs): generated/dense gives
    B2 and B4 (generated/dense-t* its temperature table), generated/prompts B3, generated/sparse B5
    against baselines/pruning, generated/masks B6 against baselines/edge_popup and lsq_supermask; theory/ and
    subset_sum/ the theory sections, stages.json B8, sgd_timing.json and generated/timings.json B7.

    Args:
        out: the quickstart's run folder.
        wandb: "offline", "online" or "disabled".
        on_part: progress, as for mole.eval.run.write_report.
    """
    out = Path(out)
    if not (out / "stages.json").is_file() or not json.loads((out / "stages.json").read_text()).get(
        "complete"
    ):
        raise ConfigError(
            "run",
            f"{out} is not a finished quickstart run (stages.json missing or incomplete): run mole quickstart --out {out}",
        )
    stages = read_json(out / "stages.json", "stages")
    rows = load_rows(out / "zoo", final_only=False, tensors="final")  # snapshots: steps and accuracies
    dense = [r for r in rows if r["final"] and r["variant"] == "dense"]
    timings = read_json(out / "generated" / "timings.json", "timings")

    def zoo(name: str, **kw) -> ZooSet:
        return ZooSet("generated", f"generated/{name}", load_rows(out / "generated" / name), **kw)

    gen_dense, masks = zoo("dense", sampling_seconds=timings["dense"]), zoo("masks")
    # the masks' sparsity and init scheme, as the recipe had them (their rows and generation spec)
    level = " / ".join(
        f"{s:.0%}" for s in sorted({json.loads(r["variant_config"])["sparsity"] for r in masks.rows})
    )
    spec = read_json(out / "generated" / "masks" / "spec.json", "generation spec").get("spec", {})
    init = str(spec.get("generated", {}).get("init") or "random").replace("_", "-")
    baselines = {k: load_rows(out / "baselines" / k) for k in ("pruning", "edge_popup", "lsq_supermask")
                 if (out / "baselines" / k).is_dir()}  # a run from before the construction baseline: none  # fmt: skip
    inputs = ReportInputs(
        data=load_task(dense[0]["task"], **json.loads(dense[0]["task_options"])),
        reference=rows,
        accuracy=[gen_dense],
        temperatures=[zoo(f.name) for f in sorted((out / "generated").glob("dense-t*"))],  # if any
        prompts=[zoo("prompts")],
        sparse=[zoo("sparse")],
        masks=[masks],
        pruning=baselines["pruning"],
        edge_popup=baselines["edge_popup"],
        construction=baselines.get("lsq_supermask", []),
        theory=load_theory(out / "theory"),
        sgd_seconds_per_step=read_json(out / "sgd_timing.json", "sgd timing")["seconds_per_step"],
        stage_seconds=stages["seconds"],
        preset=stages["preset"],
        notes={
            "accuracy": f"{len(gen_dense.rows)} dense networks, each prompted with one SGD member's test accuracy.",
            "temperature": "The same prompts sampled from scaled initial noise: 1 samples the learned "
            "distribution, lower values trade diversity for accuracy (0: one network per prompt). B2 and B4 use 1.",
            "prompts": "networks prompted over the zoo's accuracy range",
            "pruned": "the same SGD members",
            "masks": f"{len(masks.rows)} masks at {level} sampled in one pass for frozen {init} inits no "
            "member was trained on; edge-popup trained on the very same inits; random masks on them too.",
        },
    )
    return write_report(inputs, out, wandb, on_part)


def member_snapshots(zoo: Path, members: list[dict]) -> list[dict]:
    """The whole rows the pruning baselines read of the given members: each member's final row and its
    snapshots at the steps every given member has (IMP's rewind points; mole.baselines.base stacks only
    shared steps). A zoo with snapshots at random steps shares few, so this stays small where all of
    its snapshots, as Python lists, would not (~0.4 MB per 5k-parameter row)."""
    ids = {m["member_id"] for m in members}
    light = [r for r in load_rows(zoo, final_only=False, tensors=False) if r["member_id"] in ids]
    steps: dict[str, set] = {}
    for r in light:
        steps.setdefault(r["member_id"], set()).add(r["step"])
    shared = set.intersection(*steps.values()) if steps else set()
    return rows_at(zoo, [r for r in light if r["final"] or r["step"] in shared])
