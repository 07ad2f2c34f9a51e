"""`mole bench prompts`: how a trained weights model follows one prompted condition, inside its trained
range and past the zoo's best (B3 for any condition, B12).

    OUT/prompts_<condition>.json   every figure below
    OUT/plots/prompts_<condition>.png

Inside: `prompts` values evenly spaced over the range the model trained on, `per_prompt` draws each:
Spearman and MAE of achieved against prompted, and whether every prompt's mean achieved value improves
with the prompt (monotone). Past the best (the opt-in `extrapolate`, for a condition with a better side,
mole.conditions): the trained edge and `beyond` values from it to the condition's bound, `num` draws
each: the best and the mean of the draws against the zoo's best member and its 90th percentile (the
final snapshots of the variants the model trained on), and the test figure of the zoo's best tenth
chosen on the validation split, which says how much of that p90 is luck on the test split. Every draw
is a dense net (variant "dense" when the model knows the variant) measured on the task's test split.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mole.conditions import BY_NAME
from mole.data import load_task
from mole.diffusion.generated import evaluate
from mole.diffusion.model_dir import load_model, single_zoo, task_options_of
from mole.diffusion.options import SampleOptions
from mole.diffusion.sample import sample
from mole.errors import ConfigError, check_int
from mole.eval.alignment import spearman
from mole.eval.base import load_rows
from mole.eval.plots import pyplot, save
from mole.io import write_json
from mole.progress import StageProgress

PROMPTABLE = tuple(c.name for c in BY_NAME.values() if c.better is not None)  # test_acc, test_loss


def zoo_reference(meta: Mapping, condition: str) -> dict[str, float]:
    """The zoo's best member and 90th percentile (10th for a lower-is-better condition) of the final
    snapshots of the variants the model trained on, and `by_validation`: the mean of `condition` over
    the tenth of them (at least one) that rank best on its validation twin (val_acc for test_acc).

    Why the last: the test split ranks members partly by luck on its few examples, so its p90 is in part
    that luck; the tenth chosen without the test split says how much of p90 is reachable by picking
    nets for what they are (ledger C34: 0.9761 against p90 0.9771 on the quickstart zoo).
    """
    variants = set(meta.get("variants") or [])
    rows = [
        r
        for r in load_rows(single_zoo(meta, "bench prompts"), tensors=False)
        if (not variants or r["variant"] in variants) and r.get(condition) is not None
    ]
    values = np.array([r[condition] for r in rows], dtype=np.float64)
    if not len(values):
        raise ConfigError("model", f"its zoo {meta['zoo']} has no final member with a {condition}")
    higher = BY_NAME[condition].better == "higher"
    sign = 1.0 if higher else -1.0
    twin = "val_" + condition.removeprefix("test_")
    val = np.array([np.nan if r.get(twin) is None else r[twin] for r in rows], dtype=np.float64)
    tenth = -(-len(values) // 10)  # rounded up: at least one member
    top = np.argsort(-sign * np.nan_to_num(val, nan=-sign * np.inf), kind="stable")[:tenth]  # no val: last
    return {
        "members": len(values),
        "best": float(values.max() if higher else values.min()),
        "p90": float(np.quantile(values, 0.9 if higher else 0.1)),
        "mean": float(values.mean()),
        "by_validation": float(values[top].mean()) if np.isfinite(val).any() else None,
    }


def run_prompts(
    model: str | Path,
    out: str | Path,
    condition: str = "test_acc",
    prompts: int = 8,
    per_prompt: int = 4,
    beyond: int = 3,
    num: int = 16,
    options: SampleOptions | None = None,
    progress: bool = False,
) -> Path:
    """Measure prompt following of `condition` (see the module docstring); returns the JSON's path."""
    if condition not in PROMPTABLE:
        raise ConfigError("condition", f"unknown {condition!r}; valid: {', '.join(PROMPTABLE)}")
    for name, value in (("prompts", prompts), ("per_prompt", per_prompt), ("num", num)):
        check_int(value, name)
    check_int(beyond, "beyond", low=0)
    options = (options or SampleOptions()).resolved()  # a weights model of single checkpoints (below)
    loaded = load_model(model)
    meta = loaded[3]
    single_zoo(meta, "bench prompts")  # before any draw
    if meta.get("target") != "weights" or meta.get("mode") != "checkpoints":
        raise ConfigError("model", "needs a weights model trained on single checkpoints")
    spec = meta["conditions"].get(condition)
    if spec is None or spec["min"] == spec["max"]:
        raise ConfigError("condition", f"the model was not trained on a range of {condition}")
    c = BY_NAME[condition]
    lo, hi = float(spec["min"]), float(spec["max"])
    edge = hi if c.better == "higher" else lo
    data = load_task(meta["task"], **task_options_of(meta))
    fixed = {"variant": "dense"} if "dense" in meta["conditions"].get("variant", {}).get("vocab", []) else {}
    inside = np.linspace(lo, hi, prompts).tolist()
    past = np.linspace(edge, c.bound, beyond + 1).tolist() if beyond else []  # the edge, then past it
    sizes = [len(inside) * per_prompt, len(past) * num]
    calls = [-(-n // options.batch_size) * options.steps for n in sizes]  # model calls, as sample counts

    with StageProgress(f"prompts {condition}", unit="model calls", enabled=progress) as bar:

        def draw(values: list[float], each: int, part: int, extrapolate: bool) -> np.ndarray:
            asked = [v for v in values for _ in range(each)]
            how = replace(options, seed=options.seed + part, extrapolate=extrapolate)
            tick = None if bar is None else (lambda done, _total: bar(sum(calls[:part]) + done, sum(calls)))
            members = sample(model, {**fixed, condition: asked}, len(asked), how, on_step=tick, model=loaded)
            return evaluate(members, data)[condition].double().numpy().reshape(len(values), each)

        got_in = draw(inside, per_prompt, 0, False)
        got_past = draw(past, num, 1, True) if past else np.zeros((0, num))
    sign = 1.0 if c.better == "higher" else -1.0
    means = got_in.mean(1)
    ref = zoo_reference(meta, condition)
    report: dict[str, Any] = {
        "model": str(model),
        "condition": condition,
        "better": c.better,
        "options": options.recorded(),
        "zoo": ref,
        "inside": {
            "prompts": inside,
            "achieved": got_in.tolist(),
            "spearman": spearman(np.repeat(inside, per_prompt), got_in.reshape(-1)),
            "mae": float(np.abs(got_in - np.asarray(inside)[:, None]).mean()),
            "monotone": bool(np.all(np.diff(sign * means) > 0)),
        },
        "past": [past_row(p, i > 0, a, sign, ref) for i, (p, a) in enumerate(zip(past, got_past))],
    }
    out = Path(out)
    plot(report, out / "plots" / f"prompts_{condition}.png")
    path = out / f"prompts_{condition}.json"
    write_json(path, report)
    return path


def past_row(prompt: float, extrapolated: bool, got: np.ndarray, sign: float, ref: Mapping) -> dict:
    """One prompt at or past the edge: its draws' best and mean against the zoo's best and p90
    (`sign` 1 when higher is better, -1 when lower is)."""
    best = float(sign * (sign * got).max())
    return {
        "prompt": prompt,
        "extrapolated": extrapolated,
        "best": best,
        "mean": float(got.mean()),
        "best_reaches_zoo_best": bool(sign * best >= sign * ref["best"]),
        "mean_reaches_zoo_p90": bool(sign * got.mean() >= sign * ref["p90"]),
    }


def plot(report: Mapping, path: Path) -> Path:
    """Achieved against prompted: each draw inside the range and past it, the zoo's best and p90."""
    fig, ax = pyplot().subplots(figsize=(5.5, 4.5))
    inside = report["inside"]
    for p, got in zip(inside["prompts"], inside["achieved"]):
        ax.scatter([p] * len(got), got, s=12, color="C0", alpha=0.7)
    for row in report["past"]:
        ax.errorbar([row["prompt"]], [row["mean"]], fmt="o", color="C1")
        ax.scatter([row["prompt"]], [row["best"]], marker="*", s=60, color="C1")
    ref = report["zoo"]
    ax.axhline(ref["best"], color="k", lw=1, label="zoo's best member")
    ax.axhline(ref["p90"], color="k", ls=":", lw=1, label="zoo's 90th percentile")
    if ref.get("by_validation") is not None:
        ax.axhline(ref["by_validation"], color="C2", ls="-.", lw=1, label="zoo's best tenth by validation")
    xs = inside["prompts"] + [r["prompt"] for r in report["past"]]
    ax.plot([min(xs), max(xs)], [min(xs), max(xs)], "k--", lw=0.8, label="achieved = prompted")
    name = report["condition"]
    ax.set(xlabel=f"prompted {name}", ylabel=f"achieved {name}", title="Inside the range (C0), past it (C1)")
    ax.legend(fontsize=7)
    return save(fig, path)


def prompts_table(path: str | Path) -> str:
    """The JSON's figures as a few printed lines."""
    r = json.loads(Path(path).read_text())
    i, z = r["inside"], r["zoo"]
    lines = [
        f"{r['condition']}: inside the range Spearman {i['spearman']:.3f}, MAE {i['mae']:.4f}, "
        f"monotone {i['monotone']}; zoo best {z['best']:.4f}, p90 {z['p90']:.4f}, mean {z['mean']:.4f}"
    ]
    if z.get("by_validation") is not None:
        lines.append(
            f"  the zoo's best tenth by validation averages {z['by_validation']:.4f} (no test split)"
        )
    for row in r["past"]:
        lines.append(
            f"  prompt {row['prompt']:.4f}{' (past the range)' if row['extrapolated'] else ' (the edge)'}: "
            f"best {row['best']:.4f} (>= zoo best: {row['best_reaches_zoo_best']}), "
            f"mean {row['mean']:.4f} (>= zoo p90: {row['mean_reaches_zoo_p90']})"
        )
    return "\n".join(lines)
