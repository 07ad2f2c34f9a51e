"""`mole bench learn`: benchmark B9, learning to learn (G.pt) on one zoo recipe.

    OUT/zoo/          the learning-to-learn zoo (configs/ltl/*_zoo.yaml; mole.zoo.build.build_zoo)
    OUT/train/        the pairs model (`mole train`, configs/ltl/*_pairs.yaml), model/ inside
    OUT/learn.json    every figure below; OUT/plots/*.png

Starts: fresh inits from seeds no zoo member used, and mid-training snapshots (0 < step < final) of
members the model never trained on (its val / test split), spread over their test loss. Prompts: test
losses log-spaced over the training rows' range, each with the test accuracy training rows have at that
loss. Each start gets one update per prompt, then K - 1 more from its own output (mole.diffusion.update).
Figures per kind of start and K: achieved against prompted test loss and accuracy; the SGD steps (the
zoo's median hyperparameters, from the same start) that reach the achieved loss; the distance an update
moves from its start against the distance to the nearest training member (weight-matched to the start).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mole.data import load_task
from mole.diffusion.datamodule import split_members
from mole.diffusion.generated import evaluate
from mole.diffusion.model_dir import load_model, task_options_of
from mole.diffusion.options import SampleOptions
from mole.diffusion.update import Start, fresh_init, training_seeds, unseen_seeds, update_chain
from mole.errors import ConfigError
from mole.eval import learn
from mole.eval.base import load_rows, rows_at
from mole.eval.plots import pyplot, save
from mole.io import write_json
from mole.pipeline import train_model
from mole.progress import StageProgress
from mole.tokenizer import MemberTensors
from mole.zoo.build import build_zoo
from mole.zoo.spec import ZooSpec

TARGETS = {  # B9 (docs/design.md)
    "init_loss_rel_error": 0.10,  # mean relative error of test loss, from unseen random inits, K = 1
    "init_acc_mae": 0.03,
    "init_loss_spearman": 0.95,
    "sgd_steps": 200,  # median SGD steps one update is worth, at the lowest prompt, from inits
}


# ---------------------------------------------------------------------------- starts and prompts
def pick_starts(
    rows: list[dict],
    meta: Mapping,
    splits: Mapping,
    inits: int,
    mids: int,
    seed: int,
    whole: Callable[[list[dict]], list[dict]] = list,
) -> list[Start]:
    """`inits` fresh inits (unseen seeds), then `mids` mid-training snapshots of unseen members;
    `whole` turns the picked rows into rows with their tensors (rows_at, when `rows` have none)."""
    taken = training_seeds(meta["zoo"])
    starts = [fresh_init(meta, s, taken) for s in unseen_seeds(taken, inits, first=10**6 + seed * inits)]
    unseen = set(splits["val"].tolist()) | set(splits["test"].tolist())
    final = {}
    for r in rows:
        final[r["member_id"]] = max(final.get(r["member_id"], 0), r["step"])
    mid = [r for r in rows if r["member_index"] in unseen and 0 < r["step"] < final[r["member_id"]]]
    if len(mid) < mids:
        raise ConfigError(
            "mids", f"only {len(mid)} mid-training snapshots of unseen members, asked for {mids}"
        )
    mid.sort(key=lambda r: r["test_loss"])
    picked = whole([mid[i] for i in np.linspace(0, len(mid) - 1, mids).round().astype(int)])
    starts += [Start(MemberTensors.from_row(r), f"{r['member_id']}@{r['step']}") for r in picked]
    return starts


def pick_prompts(train_rows: list[dict], meta: Mapping, n: int) -> list[dict]:
    """`n` test losses log-spaced over the training rows' 2-98th percentile, each with the median test
    accuracy of the 9 training rows nearest in loss (so the pair is one the zoo holds)."""
    loss = np.array([r["test_loss"] for r in train_rows])
    acc = np.array([r["test_acc"] for r in train_rows])
    spec = meta["conditions"]
    lo, hi = np.percentile(loss, [2, 98])
    out = []
    for target in np.exp(np.linspace(np.log(lo), np.log(hi), n)):
        near = np.argsort(np.abs(loss - target))[:9]
        a = float(np.clip(np.median(acc[near]), spec["test_acc"]["min"], spec["test_acc"]["max"]))
        out.append({"test_loss": float(target), "test_acc": a})
    return out


def nearest_members(
    finals: list[MemberTensors],
    starts: list[Start],
    outputs: Mapping[int, list[MemberTensors]],
    on_step: Callable[[int, int], None] | None = None,
) -> dict[int, list[float]]:
    """{K: [distance]}: each output's distance to the nearest of `finals`, every final weight-matched to
    the output's start first (an update keeps its start's neuron order). outputs[K] holds
    len(outputs[K]) // len(starts) consecutive outputs per start, start-major.

    One start's bank of matched finals at a time: all of them at once grow with starts x finals (a
    2048-run zoo's bench peaked at 8.7 GB against 6.0 GB now, ledger L33)."""
    per = {k: len(outs) // len(starts) for k, outs in outputs.items()}
    near = {k: [0.0] * len(outs) for k, outs in outputs.items()}
    for i, s in enumerate(starts):
        bank = learn.aligned_bank(finals, s.member)  # (finals, P)
        for k, outs in outputs.items():
            for j in range(i * per[k], (i + 1) * per[k]):
                near[k][j] = learn.nearest(outs[j], bank)[0]
        if on_step is not None:
            on_step(i + 1, len(starts))
    return near


# ---------------------------------------------------------------------------- figures
def summarise(records: list[dict], kinds: list[str], updates: list[int]) -> dict:
    """Per kind of start and K: prompt following (loss, accuracy), SGD steps, distances."""
    out: dict[str, Any] = {}
    for kind in kinds:
        for k in updates:
            rs = [r for r in records if r["kind"] == kind and r["update"] == k]
            loss = learn.prompt_following([r["prompt_loss"] for r in rs], [r["test_loss"] for r in rs])
            acc = learn.prompt_following([r["prompt_acc"] for r in rs], [r["test_acc"] for r in rs])
            prompts = sorted({r["prompt_loss"] for r in rs})
            steps = {
                f"{p:.4f}": float(np.median([r["sgd_steps"] for r in rs if r["prompt_loss"] == p]))
                for p in prompts
            }
            moved = np.array([r["moved"] for r in rs])
            near = np.array([r["nearest_member"] for r in rs])
            # prompts at or below the start's loss ask for training; those above send a net back
            improving = np.array([r["prompt_loss"] <= r["start_loss"] for r in rs])
            out[f"{kind}/K={k}"] = {
                "loss": loss,
                "acc": acc,
                "achieved_loss_mean": float(np.mean([r["test_loss"] for r in rs])),
                "sgd_steps_median_per_prompt": steps,
                "sgd_steps_median_at_lowest_prompt": steps[f"{prompts[0]:.4f}"],
                "moved_median": float(np.median(moved)),
                "nearest_member_median": float(np.median(near)),
                "closer_to_start_share": float(np.mean(moved < near)),
                "closer_to_start_share_improving": (
                    float(np.mean((moved < near)[improving])) if improving.any() else None
                ),
            }
    return out


def verdict(summary: dict, updates: list[int]) -> dict:
    """Each B9 target: its figure and whether it is met."""
    one = summary["init/K=1"]
    out = {
        "init_loss_rel_error": (
            one["loss"]["rel_error_mean"],
            one["loss"]["rel_error_mean"] <= TARGETS["init_loss_rel_error"],
        ),
        "init_acc_mae": (one["acc"]["mae"], one["acc"]["mae"] <= TARGETS["init_acc_mae"]),
        "init_loss_spearman": (
            one["loss"]["spearman"],
            one["loss"]["spearman"] >= TARGETS["init_loss_spearman"],
        ),
        "sgd_steps": (
            one["sgd_steps_median_at_lowest_prompt"],
            one["sgd_steps_median_at_lowest_prompt"] >= TARGETS["sgd_steps"],
        ),
    }
    for kind in ("init", "mid"):  # K = 2, 4 never worse than K = 1: mean relative error of test loss
        base = summary[f"{kind}/K=1"]["loss"]["rel_error_mean"]
        worse = [k for k in updates if k > 1 and summary[f"{kind}/K={k}"]["loss"]["rel_error_mean"] > base]
        out[f"{kind}_K_not_worse"] = (
            [summary[f"{kind}/K={k}"]["loss"]["rel_error_mean"] for k in updates],
            not worse,
        )
    good = summary["mid_good/K=1"]  # closer to its start only counts while the prompt is met
    close, rel = good["closer_to_start_share"], good["loss"]["rel_error_mean"]
    out["good_start_closer_than_any_member"] = (
        [close, rel],
        close == 1.0 and rel <= TARGETS["init_loss_rel_error"],
    )
    return {name: {"value": v, "met": bool(m)} for name, (v, m) in out.items()}  # fmt: skip


def plot(records: list[dict], curves: dict, out: Path) -> list[Path]:
    """G.pt's prompted-vs-achieved test loss (K = 1) and achieved loss against SGD steps."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for kind in ("init", "mid"):
        rs = [r for r in records if r["kind"] == kind and r["update"] == 1]
        ax.scatter(
            [r["prompt_loss"] for r in rs],
            [r["test_loss"] for r in rs],
            s=10,
            alpha=0.6,
            label=f"from {kind}",
        )
    lo = min(r["prompt_loss"] for r in records)
    hi = max(r["prompt_loss"] for r in records)
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="achieved = prompted")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="prompted test loss",
        ylabel="achieved test loss",
        title="B9: one update",
    )
    ax.legend()
    paths = [save(fig, out / "b9_prompted_vs_achieved.png")]
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for kind, (steps, curve) in curves.items():
        ax.plot(steps, np.median(curve, 1), label=f"SGD from {kind} (median)")
        for k in sorted({r["update"] for r in records}):
            best = [
                r["test_loss"]
                for r in records
                if r["kind"] == kind and r["update"] == k and r["prompt_rank"] == 0
            ]
            ax.axhline(float(np.median(best)), ls=":", lw=1, color="C3" if kind == "init" else "C4")
            ax.annotate(f"{kind} K={k}", (steps[-1], float(np.median(best))), fontsize=7, ha="right")
    ax.set(yscale="log", xlabel="SGD steps (zoo median hyperparameters)", ylabel="test loss",
           title="B9: updates at the lowest prompt vs SGD")  # fmt: skip
    ax.legend(fontsize=8)
    paths.append(save(fig, out / "b9_sgd_steps.png"))
    return paths


# ---------------------------------------------------------------------------- the benchmark
# how each update is drawn unless told otherwise (and `mole bench learn`'s defaults): one trailing DDIM
# step, the x0 read at t = 999, which followed the prompts far better than 20 leading steps (ledger L37)
UPDATE_OPTIONS = SampleOptions(steps=1, timestep_spacing="trailing", batch_size=512)


def run_learn(
    zoo_spec: str,
    train_config: str,
    out: str | Path,
    inits: int = 32,
    mids: int = 32,
    prompts: int = 8,
    updates: tuple[int, ...] = (1, 2, 4),
    options: SampleOptions | None = None,
    sgd_steps: int = 1000,
    sgd_every: int = 10,
    wandb: str = "disabled",
    progress: bool = False,
) -> Path:
    """Build the zoo, train the pairs model (both resumed), run B9 and write OUT/learn.json.

    Args:
        zoo_spec: the learning-to-learn zoo spec (configs/ltl/*_zoo.yaml).
        train_config: the pairs model's `mole train` config (configs/ltl/*_pairs.yaml).
        out: the run folder.
        inits, mids: fresh-init and mid-training starts.
        prompts: target test losses per start.
        updates: the K reported (the chain runs to the largest).
        options: how to draw (steps, guidance, seed, batch size); default UPDATE_OPTIONS.
        sgd_steps, sgd_every: SGD from each start runs this long, its test loss read this often.
        wandb, progress: for training.
    """
    out, options, t0 = Path(out), options or UPDATE_OPTIONS, time.perf_counter()
    updates = sorted(set(updates))
    if updates[0] < 1:
        raise ConfigError("updates", f"must be positive, got {updates}")
    zoo = build_zoo(ZooSpec.from_yaml(zoo_spec), out / "zoo", progress=progress).zoo
    t_zoo = time.perf_counter() - t0
    config = yaml.safe_load(Path(train_config).read_text())
    model_dir = train_model(zoo, out / "train", config, wandb, progress)
    t_train = time.perf_counter() - t0 - t_zoo
    model = load_model(model_dir)
    meta = model[3]
    rows = load_rows(zoo, final_only=False, tensors=False)  # tensors only for the rows used: rows_at
    data_cfg = config.get("data") or {}  # the model's member split, as its ZooDataModule drew it
    splits = split_members(
        sorted({r["member_index"] for r in rows}),
        data_cfg.get("fractions", (0.8, 0.1, 0.1)),
        data_cfg.get("seed", 0),
    )
    train_set = set(splits["train"].tolist())
    train_rows = [r for r in rows if r["member_index"] in train_set]
    starts = pick_starts(rows, meta, splits, inits, mids, options.seed, lambda picked: rows_at(zoo, picked))
    asks = pick_prompts(train_rows, meta, prompts)
    data = load_task(meta["task"], **task_options_of(meta))
    n = len(starts) * len(asks)
    chain_starts = [s for s in starts for _ in asks]  # (start, prompt) row-major
    conditions = {name: [a[name] for _ in starts for a in asks] for name in ("test_loss", "test_acc")}
    kinds = ["init"] * inits + ["mid"] * mids
    achieved: dict[int, dict] = {}

    def keep(k: int, members: list[MemberTensors]) -> None:
        if k in updates:
            achieved[k] = {"members": members, "metrics": evaluate(members, data)}

    t1 = time.perf_counter()
    update_chain(model, chain_starts, conditions, n, updates[-1], data, options, on_round=keep)
    t_sample = time.perf_counter() - t1
    # SGD from the same starts, each kind its own stacked run
    plan = learn.median_plan([r for r in train_rows if r["final"]], seed=options.seed)
    arch = starts[0].member.arch
    curves = {
        kind: learn.sgd_curves(arch, [s.member for s, k in zip(starts, kinds) if k == kind], data, plan, sgd_steps, sgd_every)
        for kind in ("init", "mid")
    }  # fmt: skip
    finals = [MemberTensors.from_row(r) for r in rows_at(zoo, [r for r in train_rows if r["final"]])]
    with StageProgress("nearest training members", unit="starts", enabled=progress) as on_step:
        near = nearest_members(finals, starts, {k: got["members"] for k, got in achieved.items()}, on_step)
    start_metrics = evaluate([s.member for s in starts], data)
    good = float(np.median(start_metrics["test_loss"][inits:].numpy()))  # "good": mid starts below the median
    records = []
    for k, got in achieved.items():
        for j, m in enumerate(got["members"]):
            i, p = divmod(j, len(asks))
            kind = kinds[i]
            steps, curve = curves[kind]
            col = i if kind == "init" else i - inits
            loss = float(got["metrics"]["test_loss"][j])
            records.append({
                "kind": kind, "start": starts[i].ref, "update": k, "prompt_rank": p,
                "start_loss": float(start_metrics["test_loss"][i]),
                "prompt_loss": asks[p]["test_loss"], "prompt_acc": asks[p]["test_acc"],
                "test_loss": loss, "test_acc": float(got["metrics"]["test_acc"][j]),
                "sgd_steps": float(learn.steps_to_reach(steps, curve[:, [col]], np.array([loss]))[0]),
                "moved": learn.distance(m, starts[i].member), "nearest_member": near[k][j],
            })  # fmt: skip
    for r in records:  # the good mid-training starts as a kind of their own
        if r["kind"] == "mid" and r["start_loss"] <= good:
            records.append({**r, "kind": "mid_good"})
    summary = summarise(records, ["init", "mid", "mid_good"], updates)
    result = {
        "what": "B9 learning to learn",
        "zoo_spec": zoo_spec, "train_config": train_config, "zoo": str(zoo), "model": str(model_dir),
        "starts": {"inits": inits, "mids": mids, "good_mid_below_loss": good},
        "prompts": asks, "updates": updates, "sample": options.recorded(),
        "sgd": {"plan": plan.hparams(), "max_steps": sgd_steps, "every": sgd_every,
                "median_curve": {k: {"steps": c[0].tolist(), "test_loss": np.median(c[1], 1).tolist()} for k, c in curves.items()}},
        "summary": summary,
        "targets": verdict(summary, updates),
        "seconds": {"zoo": t_zoo, "train": t_train, "updates": t_sample, "total": time.perf_counter() - t0},
        "plots": [str(p) for p in plot(records, curves, out / "plots")],
        "records": records,
    }  # fmt: skip
    write_json(out / "learn.json", result)
    return out / "learn.json"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def learn_table(path: str | Path) -> str:
    """OUT/learn.json as a Markdown table (one row per kind of start and K) and the targets."""
    result = json.loads(Path(path).read_text())
    lines = [
        "| starts | K | loss rel. error | loss Spearman | acc MAE | acc Spearman | SGD steps (lowest prompt) "
        "| moved | nearest member | closer to start | closer, prompts <= start's loss |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, s in result["summary"].items():
        kind, k = key.split("/K=")
        lines.append(
            f"| {kind} | {k} | {s['loss']['rel_error_mean']:.3f} | {s['loss']['spearman']:.3f} | {s['acc']['mae']:.3f} "
            f"| {s['acc']['spearman']:.3f} | {s['sgd_steps_median_at_lowest_prompt']:g} | {s['moved_median']:.2f} "
            f"| {s['nearest_member_median']:.2f} | {s['closer_to_start_share']:.2f} "
            f"| {_share(s.get('closer_to_start_share_improving'))} |"
        )
    lines.append("")
    for name, t in result["targets"].items():
        lines.append(f"- {name}: {t['value']} -> {'met' if t['met'] else 'NOT met'}")
    lines.append(f"- seconds: {json.dumps({k: round(v, 1) for k, v in result['seconds'].items()})}")
    return "\n".join(lines)
