"""`mole quickstart`: the whole pipeline on digits, from zoo to report, resumable stage by stage.

    zoo/                  the checkpoint zoo (mole/zoo/quickstart.yaml, or the tiny preset's)
    diffusion/weights/    denoiser over dense weights (mole train, LightningCLI): every weight set;
                          the sparse one is its nets projected onto each sparsity by magnitude
    diffusion/masks/      denoiser over supermasks for given frozen random weights
    generated/{dense,prompts,sparse,masks}/   sampled networks, zoo format (variant "generated")
    baselines/{pruning,edge_popup}/           magnitude, random, IMP on the zoo's final dense
                          members; edge-popup on the very inits the generated masks were given
    subset_sum/ theory/   the strong-lottery-ticket construction and the random subset sum /
                          number partitioning experiments (CSV + PNG)
    results.json          every evaluator row, the stage timings and the B2-B8 figures
    report.md, plots/     the report (mole.eval.report)

Every stage writes its folder atomically and is skipped when its output is already complete, so a
killed quickstart rerun with the same command goes on where it stopped. PRESETS holds the sizes:
"default" (the demo: under 10 minutes on 2 CPU cores) and "tiny" (the CI smoke run: every stage and
every report section, in well under 2 minutes, with numbers that mean nothing).
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mole.errors import ConfigError

SPARSITIES = (0.5, 0.8, 0.9)
TEMPERATURES = (0.5, 0.0)  # besides 1: how accuracy trades against diversity

PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "zoo": {},  # mole/zoo/quickstart.yaml as is
        "weights": {  # the denoiser over the dense members' weights (every snapshot): test_acc prompts
            "variants": ["dense"],
            "steps": 2000, "width": 64, "depth": 2, "heads": 4, "batch_size": 32, "lr": 2e-3,
            "global_rank": 256,  # the denoiser's global linear path (mole.diffusion.denoiser.GlobalPath)
            # KL from each member's outputs to its x0 prediction's on 1024 training inputs
            # (mole.diffusion.function_loss), with gradients clipped to norm 1 (at weight 1 unclipped
            # it diverged). Prompt 0.96, 5 steps, guidance 2, 256 inputs: 0.876 test accuracy without,
            # 0.907 at weight 0.1, 0.942 at 1; Spearman over 16 prompts 0.90 / 0.90 / 0.95.
            # The term also scores the prediction magnitude-pruned at 50 / 80 / 90% (function_sparsities),
            # so that draws stay good when projected onto a sparsity (the sparse set, B5). Prompt 0.987,
            # guidance 4, 16 nets pruned to 50 / 80 / 90%: 0.950 / 0.933 / 0.869 with neither change,
            # 0.956 / 0.942 / 0.856 with 1024 inputs (256 before), 0.961 / 0.944 / 0.921 with both
            # (0.950 / 0.935 / 0.904 with both at 512 inputs); the quickstart's training 219 -> 361 s.
            "function_loss": 1.0, "gradient_clip_val": 1.0, "function_inputs": 1024,
            "function_sparsities": list(SPARSITIES),
        },
        # The mask model's logits are the least-squares construction's scores (mole.diffusion.mask_prior)
        # plus a correction learned through the masked networks (FunctionLoss.masked: KL from the
        # edge-popup member to its init under the top-k). On 16 unseen inits at 50% (edge-popup on them
        # 0.922): BCE on mask bits 0.107 (chance); the learned logits alone 0.642 (600 steps, gain
        # at 3e-3); the construction alone (untrained correction) 0.846. Every correction we trained
        # on top of it lowered that: 0.831 at this recipe (100 steps, gain 3e-5), 0.817 / 0.809 /
        # 0.794 at 300 steps and gain 3e-5 / 1e-4 / 3e-4, 0.599 at the old 600 steps / 3e-3, also with
        # 4x the training inits (0.802) or cross-entropy on labels instead of the KL (0.782).
        "masks": {"steps": 100, "width": 64, "depth": 2, "heads": 4, "batch_size": 16, "lr": 1e-5,
                  "entry_gain_lr": 3e-5, "function_loss": 1.0, "mask_bce": 0.0, "mask_prior": {}},
        # 5 DDIM steps: with x0 prediction and the global path, fewer steps lose nothing (dense model,
        # prompt 0.96, guidance 2: 0.861 / 0.880 / 0.876 / 0.870 test accuracy at 50 / 10 / 5 / 3
        # steps, Spearman over 16 prompts 0.88 / 0.89 / 0.90 / 0.91) and sampling is 10x cheaper (B7).
        # Guidance 6 for the weight model. This preset's model (one training run) at guidance 2 / 3 /
        # 4 / 6: B2 0.983 / 0.991 / 0.996 / 1.000; the sparse set at 50% 0.950 / 0.957 / 0.961 / 0.963
        # (magnitude pruning 0.960); B3 over sampling seeds 2-4 0.90-0.94 / 0.92-0.96 / 0.93-0.95 /
        # 0.93-0.95 (a model trained on 512 inputs: 0.79-0.85 at 2, 0.92 at 4). The same recipe with
        # training seed 1 instead of 0: B3 0.78-0.81 at 4, 0.82-0.89 at 6 (the earlier recipe, 256
        # inputs without the pruned term: 0.72-0.87 at 2, 0.87-0.88 at 6), sparse set 0.955 / 0.943 /
        # 0.916 at 6. The mask model keeps guidance 2, where B6 was measured.
        "sample": {"steps": 5, "guidance": 6.0, "mask_guidance": 2.0, "prompts": 8, "per_prompt": 4,
                   "per_sparsity": 16, "masks": 16},
        "imp": {"rounds": 3, "target_sparsity": 0.9},
        "edge_popup": {"epochs": 20},
        "subset_sum": {"n": [4, 8, 12, 16, 20]},
        "theory": {"rss_trials": 300, "npp_trials": 200, "npp_n": [10, 16, 22]},
    },
    "tiny": {
        "zoo": {"members": 8, "group_size": 8, "arch_options": {"hidden": [16, 16]},
                "hparams": {"epochs": [3]}, "snapshots": {"every": 40, "include_init": True},
                "variants": [
                    "dense",
                    {"name": "magnitude", "options": {"sparsity": [0.5, 0.8, 0.9], "scope": "global"}},
                    {"name": "imp", "options": {"rounds": 2, "prune_fraction": 0.5}},
                    {"name": "supermask", "options": {"sparsity": 0.5, "init": "signed_constant", "epochs": 2}},
                ]},
        "weights": {"variants": ["dense"], "steps": 30, "width": 32, "depth": 1, "heads": 2,
                    "batch_size": 8, "lr": 1e-3, "global_rank": 8, "function_loss": 1.0,
                    "gradient_clip_val": 1.0, "function_inputs": 64, "function_sparsities": list(SPARSITIES)},
        "masks": {"steps": 10, "width": 32, "depth": 1, "heads": 2, "batch_size": 4, "lr": 1e-5,
                  "entry_gain_lr": 3e-5, "function_loss": 1.0, "mask_bce": 0.0, "mask_prior": {}},
        "sample": {"steps": 4, "guidance": 3.0, "mask_guidance": 2.0, "prompts": 3, "per_prompt": 2, "per_sparsity": 2, "masks": 4},
        "imp": {"rounds": 2, "target_sparsity": 0.75},
        "edge_popup": {"epochs": 2},
        "subset_sum": {"n": [4, 8]},
        "theory": {"rss_trials": 20, "npp_trials": 10, "npp_n": [8, 10]},
    },
}  # fmt: skip


def preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError("preset", f"unknown {name!r}; valid: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def zoo_spec(p: dict):
    from mole.zoo.spec import ZooSpec

    with resources.as_file(resources.files("mole.zoo") / "quickstart.yaml") as path:
        raw = yaml.safe_load(path.read_text())
    for key, value in p["zoo"].items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and key == "hparams" else value
    return ZooSpec.from_dict(raw)


# ---------------------------------------------------------------------------- stages
def train_denoiser(zoo: Path, run: Path, opts: dict, target: str, wandb: str, progress: bool) -> Path:
    """Train (or resume, or find done) one denoiser through `mole train`'s LightningCLI; the model folder."""
    from mole.diffusion.train import cli_main
    from mole.zoo.store import atomic_path, write_json

    model = run / "model"
    done = run / "done.json"
    if done.is_file() and model.is_dir() and json.loads(done.read_text()) == opts:
        return model
    data = {"zoo": str(zoo), "tokenizer": "neuron", "batch_size": opts["batch_size"], "target": target,
            "cache_dir": str(run.parent / "cache"), "fractions": [0.8, 0.2, 0.0]}  # fmt: skip
    if target == "weights":
        data.update(
            variants=opts["variants"],
            tokenizer_options={"canonical": "match", "stats_per": opts.get("stats_per", "column")},
        )
    config = {
        "model": {
            "denoiser": {
                "class_path": "mole.diffusion.denoiser.Denoiser",
                "init_args": {k: opts[k] for k in ("width", "depth", "heads", "global_rank") if k in opts},
            },
            "prediction_type": "sample", "lr": opts["lr"], "warmup_steps": min(100, opts["steps"] // 10),
            "ema_decay": 0.995, "cond_drop_prob": 0.1, "function_loss": opts.get("function_loss", 0.0),
            "function_sparsities": opts.get("function_sparsities"), "mask_bce": opts.get("mask_bce", 1.0),
            "entry_gain_lr": opts.get("entry_gain_lr"), "mask_prior": opts.get("mask_prior"),
            **{k: opts[k] for k in ("function_inputs",) if k in opts},  # else the system's default
        },
        "data": data,
        "trainer": {"max_steps": opts["steps"], "val_check_interval": opts["steps"],
                    "check_val_every_n_epoch": None, "log_every_n_steps": 25,
                    "enable_progress_bar": progress, "enable_model_summary": False,
                    "gradient_clip_val": opts.get("gradient_clip_val")},
    }  # fmt: skip
    run.mkdir(parents=True, exist_ok=True)
    with atomic_path(run / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    cli_main([str(run / "config.yaml"), "--run_dir", str(run), "--wandb", wandb])
    write_json(done, opts)  # atomic: a kill leaves no half-written marker
    return model


def sgd_seconds_per_step(zoo: Path, steps: int = 60, repeats: int = 5) -> float:
    """Wall seconds of one SGD step of ONE network (a dense member's hyperparameters, trained alone).

    The median over `repeats` timed runs of about `steps` steps each, after one untimed run that warms
    the allocator and kernels up: a single short run varied by +-30 % between quickstart runs on the
    same machine, and B7 is this figure's multiple.
    """
    from mole.baselines.base import architecture_of, plan_of
    from mole.data import load_task
    from mole.eval import load_rows
    from mole.zoo.train import train_stacked

    row = next(r for r in load_rows(zoo) if r["variant"] == "dense")
    arch, plan = architecture_of(row), plan_of(row)
    data = load_task(row["task"], **json.loads(row["task_options"]))
    one_epoch = max(1, len(data.y_train) // plan.batch_size)
    plan = plan.__class__(**{**plan.__dict__, "epochs": max(1, -(-steps // one_epoch))})
    seconds = []
    for _ in range(repeats + 1):
        params = arch.init_stacked([row["seed"]], [row["init_scale"]])
        t0 = time.perf_counter()
        train_stacked(arch.forward_stacked, params, data, [plan], snapshot_steps=[], on_snapshot=None)
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
        from mole.zoo.store import write_json

        seconds = {**self.seconds, **({"total": sum(self.seconds.values())} if complete else {})}
        write_json(self.path, {"preset": self.preset, "seconds": seconds, "complete": complete})


def run_quickstart(
    out: str | Path = "runs/quickstart",
    preset_name: str = "default",
    wandb: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Run (or resume) the whole pipeline into `out`; returns the report's path.

    Args:
        out: run folder.
        preset_name: "default" or "tiny" (PRESETS).
        wandb: "offline", "online" or "disabled" (default: $WANDB_MODE, else offline).
        progress: progress bars.
        log: where stage lines go.
    """
    from mole.baselines.run import run_baselines
    from mole.baselines.subset_sum import plot_subset_sum, subset_sum_experiment
    from mole.data import load_task
    from mole.diffusion.generated import generate_zoo
    from mole.eval import load_rows
    from mole.theory.io import write_csv
    from mole.theory.npp import npp_experiment, plot_npp
    from mole.theory.rss import plot_rss, rss_experiment
    from mole.zoo.build import build_zoo
    from mole.zoo.store import write_json

    p = preset(preset_name)
    wandb = wandb or (
        os.environ.get("WANDB_MODE")
        if os.environ.get("WANDB_MODE") in ("offline", "online", "disabled")
        else "offline"
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stage = Stages(out, preset_name, log)

    zoo = stage("zoo", lambda: build_zoo(zoo_spec(p), out / "zoo", progress=progress).zoo)
    rows = load_rows(zoo, final_only=False)
    finals = [r for r in rows if r["final"]]
    dense = [r for r in finals if r["variant"] == "dense"]
    data = load_task(dense[0]["task"], **json.loads(dense[0]["task_options"]))

    # One weight model, on dense rows alone; the sparse set is its nets projected onto each sparsity
    # (sample's `project`: exact global magnitude top-k). Measured on the default zoo (2000 steps,
    # 5 DDIM steps, guidance 2, 16 nets per level at 50 / 80 / 90%): a model also trained on the
    # magnitude and IMP rows, prompted with variant imp and the sparsity, made nets at 0.61 / 0.46 /
    # 0.32 test accuracy (its dense nets 0.72); this model's nets, projected, 0.875 / 0.847 / 0.723
    # (dense 0.88), and it trains once instead of twice (~200 s of the quickstart).
    weights = stage(
        "train weights",
        lambda: train_denoiser(zoo, out / "diffusion" / "weights", p["weights"], "weights", wandb, progress),
    )
    masks = stage(
        "train masks",
        lambda: train_denoiser(zoo, out / "diffusion" / "masks", p["masks"], "mask", wandb, progress),
    )

    s = p["sample"]
    meta = json.loads((weights / "mole.json").read_text())
    lo, hi = meta["conditions"]["test_acc"]["min"], meta["conditions"]["test_acc"]["max"]
    timings: dict[str, float] = {}

    def gen(
        name: str, model: Path, conditions: dict, num: int, seed: int, guidance: float | None = None, **kw
    ) -> list[dict]:
        g = s["guidance"] if guidance is None else guidance
        folder, sampled = generate_zoo(
            model, out / "generated" / name, conditions, num, s["steps"], g, seed, **kw
        )
        rows = load_rows(folder)
        if sampled:  # the sampling itself (not loading the model, not writing); a resumed run keeps it
            timings[name] = sum(json.loads(r["extra"])["sampling_seconds"] for r in rows)
        return rows

    def sample_all() -> dict[str, list[dict]]:
        acc = [min(max(r["test_acc"], lo), hi) for r in dense]  # B2: one net per SGD member, its accuracy
        sweep = np.repeat(np.linspace(lo, hi, s["prompts"]), s["per_prompt"]).tolist()  # B3
        levels = [x for x in SPARSITIES for _ in range(s["per_sparsity"])]
        return {
            "dense": gen("dense", weights, {"test_acc": acc, "variant": "dense"}, len(acc), 1),
            **{f"dense-t{t}": gen(f"dense-t{t}", weights, {"test_acc": acc, "variant": "dense"}, len(acc), 1,
                                  temperature=t) for t in TEMPERATURES},
            "prompts": gen("prompts", weights, {"test_acc": sweep, "variant": "dense"}, len(sweep), 2),
            # the sparse set: the best nets the model knows (the top of its accuracy range), pruned
            "sparse": gen("sparse", weights, {"test_acc": hi, "variant": "dense"}, len(levels), 3,
                          project={"sparsity": levels}),
            "masks": gen("masks", masks, {"sparsity": 0.5}, s["masks"], 4, s["mask_guidance"],
                         init_scheme="signed_constant"),
        }  # fmt: skip

    generated = stage("sample", sample_all)

    def baselines() -> dict[str, list[dict]]:
        pruning = run_baselines(
            rows_of_members(rows, dense), data,
            {"magnitude": {"sparsity": list(SPARSITIES), "scope": "global"},
             "random": {"sparsity": list(SPARSITIES)},
             "imp": {"rounds": p["imp"]["rounds"], "target_sparsity": p["imp"]["target_sparsity"]}},
            out / "baselines" / "pruning", progress=progress,
        )  # fmt: skip
        # Generated rows carry no training hyperparameters; edge-popup trains their inits with the
        # zoo's own (batch size, optimizer ...) from a supermask member, and its variant's options.
        hp = next(r for r in finals if r["variant"] == "supermask")
        keys = ("optimizer", "lr", "weight_decay", "momentum", "batch_size", "epochs", "init_scale")
        given = [{**r, **{k: hp[k] for k in keys}} for r in generated["masks"]]
        popup = run_baselines(
            given, data, {"edge_popup": {"sparsity": 0.5, **p["edge_popup"]}},
            out / "baselines" / "edge_popup", progress=progress,
        )  # fmt: skip
        return {"pruning": pruning, "edge_popup": popup}

    stage("baselines", baselines)

    def theory() -> None:
        folder = out / "theory"
        folder.mkdir(parents=True, exist_ok=True)
        t = p["theory"]
        settings = {**t, "subset_sum": p["subset_sum"]}
        done = folder / "rows.json"
        if done.is_file() and json.loads(done.read_text()).get("settings") == settings:
            return
        rss = rss_experiment(
            n=list(range(1, 25)),
            eps=[0.1, 0.03, 0.01, 0.003, 0.001],
            bits=[None, 4, 8],
            trials=t["rss_trials"],
            seed=0,
        )
        write_csv(rss, folder / "rss.csv")
        plot_rss(rss, folder / "rss.png")
        npp = npp_experiment(n=t["npp_n"], trials=t["npp_trials"], seed=0)
        write_csv(npp, folder / "npp.csv")
        plot_npp(npp, folder / "npp.png")
        target = dense[0]  # the zoo's first final dense member
        ss = subset_sum_experiment(target, data, ns=p["subset_sum"]["n"], seed=0)
        (out / "subset_sum").mkdir(exist_ok=True)
        write_csv(ss, out / "subset_sum" / "subset_sum.csv")
        plot_subset_sum(ss, out / "subset_sum" / "subset_sum.png", title=f"target {target['member_id']}")
        write_json(done, {"rss": rss, "npp": npp, "subset_sum": ss, "settings": settings})

    stage("theory", theory)
    if not (out / "sgd_timing.json").is_file():
        stage(
            "sgd timing",
            lambda: write_json(out / "sgd_timing.json", {"seconds_per_step": sgd_seconds_per_step(zoo)}),
        )
    timing_file = out / "generated" / "timings.json"
    if timings or not timing_file.is_file():
        old = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
        write_json(timing_file, {**old, **timings})
    stage.write(complete=True)
    return stage("report", lambda: report_from_run(out, wandb), record=False)


def report_from_run(out: str | Path, wandb: str = "disabled") -> Path:
    """(Re)write OUT/report.md, OUT/plots and OUT/results.json from a finished quickstart run folder.

    The run's folders fill the report's roles (mole.eval.inputs.ReportInputs): generated/dense gives
    B2 and B4 (generated/dense-t* its temperature table), generated/prompts B3, generated/sparse B5
    against baselines/pruning, generated/masks B6 against baselines/edge_popup; theory/ and
    subset_sum/ the theory sections, stages.json B8, sgd_timing.json and generated/timings.json B7.

    Args:
        out: the quickstart's run folder.
        wandb: "offline", "online" or "disabled".
    """
    from mole.data import load_task
    from mole.eval import load_rows
    from mole.eval.inputs import ReportInputs, ZooSet, load_theory
    from mole.eval.run import write_report
    from mole.zoo.store import read_json

    out = Path(out)
    if not (out / "stages.json").is_file() or not json.loads((out / "stages.json").read_text()).get(
        "complete"
    ):
        raise ConfigError(
            "run",
            f"{out} is not a finished quickstart run (stages.json missing or incomplete): run mole quickstart --out {out}",
        )
    stages = read_json(out / "stages.json", "stages")
    rows = load_rows(out / "zoo", final_only=False)
    dense = [r for r in rows if r["final"] and r["variant"] == "dense"]
    timings = read_json(out / "generated" / "timings.json", "timings")

    def zoo(name: str, **kw) -> ZooSet:
        return ZooSet("generated", f"generated/{name}", load_rows(out / "generated" / name), **kw)

    gen_dense, masks = zoo("dense", sampling_seconds=timings["dense"]), zoo("masks")
    baselines = {k: load_rows(out / "baselines" / k) for k in ("pruning", "edge_popup")}
    inputs = ReportInputs(
        data=load_task(dense[0]["task"], **json.loads(dense[0]["task_options"])),
        reference=rows,
        accuracy=[gen_dense],
        # optional: runs made before the temperature sweep have none
        temperatures=[
            zoo(f"dense-t{t}") for t in TEMPERATURES if (out / "generated" / f"dense-t{t}").is_dir()
        ],
        prompts=[zoo("prompts")],
        sparse=[zoo("sparse")],
        masks=[masks],
        pruning=baselines["pruning"],
        edge_popup=baselines["edge_popup"],
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
            "masks": f"{len(masks.rows)} masks at 50% sampled in one pass for frozen signed-constant inits no "
            "member was trained on; edge-popup trained on the very same inits; random masks on them too.",
        },
    )
    return write_report(inputs, out, wandb)


def rows_of_members(rows: list[dict], members: list[dict]) -> list[dict]:
    """Every snapshot row (dense) of the given members: IMP rewinds to their step-0 rows."""
    ids = {m["member_id"] for m in members}
    return [r for r in rows if r["member_id"] in ids]
