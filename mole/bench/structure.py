"""`mole bench structure`: sparse, quantized and low-rank nets from a weights model told the level,
against the projection of its dense draws and the SGD side's baselines (B5 with the model told the
sparsity, B11).

    OUT/structure.json        every figure below
    OUT/baselines/            one-shot magnitude pruning and IMP of the zoo's final dense members
                              (mole.baselines.run, the quickstart's options; read back when present)
    OUT/plots/structure.png

Rows per level, each `num` nets from one seed:
    weights   the model told the level; its generated weights made exact (magnitude top-k, PTQ)
    channel   the same draws read from the model's mask or code channels (sampling's `channels`)
    dense     dense draws (variant dense, the top of the dense rows' accuracy) projected onto the
              level: what a model that never saw the level gives
A sparsity is prompted with the sparse variant the model knows (IMP first, else magnitude) and a
bit-width with "quantized"; each with the test accuracy of the best training row of that variant at the
nearest level (the top of what the model saw there). Baselines per level: sparsity, one-shot magnitude
pruning of the SGD members at that sparsity and their IMP round nearest it (3 rounds to the largest
level; its sparsity recorded); bits, the zoo's post-training quantized members at that level (and its
QAT members where the zoo has them); rank, the zoo's low-rank members at that rank: truncated SVD of
the SGD members and factorized training. A rank is prompted with "lowrank"; its weights row is the
truncated SVD of the draw, its channel row the product of the model's own generated factors (only
for a model whose tokens carry factors).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mole.baselines.run import run_baselines
from mole.data import load_task
from mole.diffusion.generated import evaluate
from mole.diffusion.model_dir import load_model, single_zoo, task_options_of
from mole.diffusion.options import SampleOptions
from mole.diffusion.sample import sample
from mole.errors import ConfigError, check_int
from mole.eval.base import load_rows
from mole.eval.plots import pyplot, save
from mole.io import write_json
from mole.zoo.quant import LEVELS
from mole.zoo.store import json_column

SPARSE_VARIANTS = ("imp", "magnitude")  # prompted with a sparsity, the first the model knows
PRUNING = {"magnitude": {"scope": "global"}, "imp": {"rounds": 3}}  # as configs/quickstart/baselines.yaml


def level_of(row: Mapping[str, Any]) -> str:
    """A quantized row's level as prompts name it ("8", "4", "2", "ternary")."""
    config = json_column(row.get("variant_config"))
    return "ternary" if config.get("scheme") == "ternary" else str(config.get("bits", row.get("bits")))


def top_prompt(
    rows: list[dict], variant: str, key: str, level: float | str, ceiling: float | None = None
) -> float:
    """The best test accuracy among `variant` rows at the level nearest `level` (key: sparsity or bits),
    at most `ceiling` (the model's trained range: the best row may be a validation or test member's,
    above every training row)."""
    mine = [r for r in rows if r["variant"] == variant]
    if key == "bits":
        mine = [r for r in mine if level_of(r) == str(level)]
    elif key == "rank":
        mine = [r for r in mine if r.get("rank") == level]
    else:
        nearest = min({round(r["sparsity"], 6) for r in mine}, key=lambda s: abs(s - level))
        mine = [r for r in mine if round(r["sparsity"], 6) == nearest]
    if not mine:
        raise ConfigError("model", f"its zoo has no {variant} row at {key} {level}")
    best = max(r["test_acc"] for r in mine)
    return best if ceiling is None else min(best, ceiling)


def zoo_accuracies(
    rows: list[dict], variant: str, at_level: Callable[[dict], bool], key: str, value: str, default=None
) -> list[float]:
    """Test accuracies of the zoo's `variant` rows at a level whose variant_config has `key` == `value`
    (`default` where the config leaves it out): e.g. its PTQ members at 4 bits."""
    return [
        r["test_acc"]
        for r in rows
        if r["variant"] == variant
        and at_level(r)
        and json_column(r.get("variant_config")).get(key, default) == value
    ]


def run_structure(
    model: str | Path,
    out: str | Path,
    sparsities: Sequence[float] = (0.5, 0.8, 0.9),
    bits: Sequence[int | str] = LEVELS,
    num: int = 16,
    options: SampleOptions | None = None,
    progress: bool = False,
    ranks: Sequence[int] = (),
) -> Path:
    """Measure the generated rows against the baselines at every level (module docstring); the JSON's path."""
    check_int(num, "num")
    options = (options or SampleOptions()).resolved()  # a weights model of single checkpoints
    loaded = load_model(model)
    _, _, tok, meta = loaded
    known = set(meta["conditions"].get("variant", {}).get("vocab", []))
    sparse = next((v for v in SPARSE_VARIANTS if v in known), None)
    if sparsities and sparse is None:
        raise ConfigError(
            "model", f"it never saw a sparse variant ({', '.join(SPARSE_VARIANTS)}): no sparsity"
        )
    if bits and "quantized" not in known:
        raise ConfigError("model", "it never saw quantized members: no bits")
    if ranks and "lowrank" not in known:
        raise ConfigError("model", "it never saw low-rank members: no ranks")
    rows = load_rows(single_zoo(meta, "bench structure"))
    data = load_task(meta["task"], **task_options_of(meta))
    out = Path(out)

    ceiling = meta["conditions"].get("test_acc", {}).get("max")  # the trained range's top
    top_dense = max(r["test_acc"] for r in rows if r["variant"] == "dense")
    top_dense = top_dense if ceiling is None else min(top_dense, ceiling)

    def draw(prompt: dict, key: str, level: float | str, seed: int) -> dict[str, list[float]]:
        got: dict[str, Any] = {}
        factors = "factors" in (tok.fields or [])
        read = ((False, "weights"), (True, "channel")) if key != "rank" or factors else ((False, "weights"),)
        for channels, row in read:
            nets = sample(model, prompt, num, replace(options, seed=seed, channels=channels), model=loaded)
            got[row] = evaluate(nets, data)["test_acc"].tolist()
            got[f"{row}_structure"] = nets[0].extra.get("structure")
        dense = {"variant": "dense", "test_acc": top_dense}
        nets = sample(model, dense, num, replace(options, seed=seed), project={key: level}, model=loaded)
        got["dense"] = evaluate(nets, data)["test_acc"].tolist()
        return got

    report: dict[str, Any] = {
        "model": str(model),
        "options": options.recorded(),
        "num": num,
        "sparsity": [],
        "bits": [],
        "rank": [],
    }
    if sparsities:
        dense = [r for r in rows if r["variant"] == "dense"]
        pruning = {name: {**opts, "sparsity": list(sparsities)} for name, opts in PRUNING.items()}
        pruning["imp"] = {"rounds": PRUNING["imp"]["rounds"], "target_sparsity": max(sparsities)}
        base = run_baselines(dense, data, pruning, out / "baselines", progress=progress)
        for i, s in enumerate(sparsities):
            best = top_prompt(rows, sparse, "sparsity", s, ceiling)
            prompt = {"variant": sparse, "sparsity": s, "test_acc": best}
            entry = {"level": s, "prompt": prompt, **draw(prompt, "sparsity", s, options.seed + i)}
            for name in PRUNING:  # IMP's rounds land near, not on, each level: its nearest round
                mine = [r for r in base if r["variant"] == name]
                at = min({round(r["sparsity"], 4) for r in mine}, key=lambda x: abs(x - s))
                entry[name] = [r["test_acc"] for r in mine if round(r["sparsity"], 4) == at]
                entry[f"{name}_sparsity"] = at
            report["sparsity"].append(summarise(entry, ("magnitude", "imp")))
    # bits and ranks alike: (level key, variant, levels, is a row at level v, the variant_config key
    # that names its baselines, their names, that key's default, seed offset)
    kinds = (
        ("bits", "quantized", bits, lambda row, v: level_of(row) == str(v), "mode", ("ptq", "qat"), "ptq", 100),
        ("rank", "lowrank", ranks, lambda row, v: row.get("rank") == v, "method", ("svd", "factorized"), None, 200),
    )  # fmt: skip
    for key, variant, levels, at_level, by, baselines, default, offset in kinds:
        for i, v in enumerate(levels):
            prompt = {"variant": variant, key: v, "test_acc": top_prompt(rows, variant, key, v, ceiling)}
            entry = {"level": v, "prompt": prompt, **draw(prompt, key, v, options.seed + offset + i)}
            for name in baselines:
                entry[name] = zoo_accuracies(
                    rows, variant, lambda row, v=v, at=at_level: at(row, v), by, name, default
                )
            report[key].append(summarise(entry, baselines))
    plot(report, out / "plots" / "structure.png")
    path = out / "structure.json"
    write_json(path, report)
    return path


ROWS = ("weights", "channel", "dense")  # the generated rows, in print order


def summarise(entry: dict, baselines: tuple[str, ...]) -> dict:
    """Means of every row of one level, and whether each row told the level reaches the dense
    projection and each baseline (>=; None where the zoo has no such baseline)."""
    mean = {k: float(np.mean(entry[k])) if entry.get(k) else None for k in (*ROWS, *baselines)}
    entry["mean"] = mean
    entry["reaches"] = {
        row: {k: None if mean[k] is None else bool(mean[row] >= mean[k]) for k in ("dense", *baselines)}
        for row in ("weights", "channel")
        if mean[row] is not None
    }
    return entry


def plot(report: Mapping, path: Path) -> Path:
    """Mean test accuracy per level: the generated rows and the baselines, sparsity and bits side by side."""
    fig, axes = pyplot().subplots(1, 3, figsize=(15, 4))
    for ax, key in zip(axes, ("sparsity", "bits", "rank")):
        entries = report[key]
        if not entries:  # a level kind not measured (e.g. --sparsities [])
            ax.set_axis_off()
            continue
        labels = [str(e["level"]) for e in entries]
        names = [
            k
            for k in (entries[0]["mean"] if entries else {})
            if any(e["mean"][k] is not None for e in entries)
        ]
        width = 0.8 / max(len(names), 1)
        for j, name in enumerate(names):
            values = [e["mean"][name] or 0.0 for e in entries]
            ax.bar(np.arange(len(entries)) + j * width, values, width, label=name)
        ax.set_xticks(np.arange(len(entries)) + 0.4 - width / 2, labels)
        ax.set(xlabel=key, ylabel="mean test accuracy", ylim=(0, 1), title=f"generated at a {key}")
        ax.legend(fontsize=7)
    return save(fig, path)


def structure_table(path: str | Path) -> str:
    """The JSON's figures as printed lines."""
    r = json.loads(Path(path).read_text())
    lines = []
    for key in ("sparsity", "bits", "rank"):
        for e in r.get(key, []):
            order = [*ROWS, *sorted(set(e["mean"]) - set(ROWS))]
            means = ", ".join(f"{k} {e['mean'][k]:.4f}" for k in order if e["mean"][k] is not None)
            reach = e["reaches"]["weights"]
            lines.append(f"{key} {e['level']}: {means}; weights reaches {reach}")
    return "\n".join(lines)
