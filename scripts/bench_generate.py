"""B2 / B3 / B4 / B7 of the quickstart's weight model on a zoo, over several sampling seeds.

    python scripts/bench_generate.py --out runs/bench/generate.json [--zoo ZOO] [--preset default]
        [--run runs/bench/generate] [--seeds [2,3,4]] [--train_steps N]

The same files and entry points as `mole quickstart`: the zoo is configs/quickstart/zoo.yaml built into
RUN/zoo (unless --zoo), the model trains from configs/quickstart/weights.yaml through `mole train`
(mole.pipeline.train_model), the networks are drawn with configs/quickstart/sample.yaml's options
(mole.diffusion.generated.generate_zoo), and the figures come from `mole eval`'s evaluate_zoos:
    acc_ratio (B2)        one net per final SGD member, prompted with its accuracy
    spearman_prompt (B3)  a sweep over the model's accuracy range, once per sampling seed; also its MAE
    memorization (B4)     Zeng et al.'s test on B2's nets: share of its four parts met (novelty, the
                          noise / interpolation frontier, diversity, accuracy); also frac_novel (cosine)
    speedup_per_net (B7)  seconds per net of SGD to their accuracy / of sampling
RUN keeps every stage, so a rerun resumes. Prints the figures and writes them as JSON, atomically.
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
from mole.diffusion.generated import generate_zoo  # noqa: E402
from mole.diffusion.options import SampleOptions  # noqa: E402
from mole.eval import load_rows  # noqa: E402
from mole.eval.benchmarks import TARGETS, met  # noqa: E402
from mole.eval.run import evaluate_zoos  # noqa: E402
from mole.io import read_json, write_json  # noqa: E402
from mole.pipeline import load_recipe, merged, sgd_seconds_per_step, train_model  # noqa: E402
from mole.zoo.build import build_zoo  # noqa: E402
from mole.zoo.spec import ZooSpec  # noqa: E402


def main(
    *,
    out: str,
    zoo: str | None = None,
    run: str = "runs/bench/generate",
    preset: str = "default",
    recipe: str | None = None,
    seeds: list[int] | None = None,
    train_steps: int | None = None,
) -> dict:
    """Train the quickstart's weight model on a zoo, sample its B2 set and B3 sweeps, write the figures.

    Args:
        out: JSON file to write.
        zoo: zoo folder (default: the recipe's zoo built into RUN/zoo).
        run: folder for every stage (resumed when rerun).
        preset: the recipe's preset (configs/quickstart/<preset>/ overrides; default: none).
        recipe: the recipe folder (default: configs/quickstart); a copy of it tries other numbers.
        seeds: sampling seeds of the B3 sweep (default: the recipe's prompt seed alone).
        train_steps: training steps (default: the recipe's).
    """
    recipe, folder = load_recipe(preset, recipe), Path(run)
    t0 = time.perf_counter()
    zoo_dir = (
        Path(zoo) if zoo else build_zoo(ZooSpec.from_dict(recipe.zoo), folder / "zoo", progress=False).zoo
    )
    zoo_seconds = time.perf_counter() - t0
    config = recipe.weights
    if train_steps is not None:
        config = merged(config, {"trainer": {"max_steps": train_steps, "val_check_interval": train_steps}})
    t0 = time.perf_counter()
    model = train_model(zoo_dir, folder / "weights", config, "disabled", progress=False)
    train_seconds = time.perf_counter() - t0  # ~0 when the run folder already held the model
    steps = config["trainer"]["max_steps"]

    s = recipe.sample
    meta = read_json(model / "mole.json", "model metadata")
    lo, hi = meta["conditions"]["test_acc"]["min"], meta["conditions"]["test_acc"]["max"]
    sgd = [r for r in load_rows(zoo_dir) if r["variant"] == "dense"]
    prompts = {"test_acc": [min(max(r["test_acc"], lo), hi) for r in sgd], "variant": "dense"}
    dense, _ = generate_zoo(
        model, folder / "dense", prompts, len(sgd), SampleOptions(**{**s["weights"], **s["dense"]})
    )
    p = s["prompts"]
    sweep = {
        "test_acc": np.repeat(np.linspace(lo, hi, p["prompts"]), p["per_prompt"]).tolist(),
        "variant": "dense",
    }
    sweeps = [
        generate_zoo(model, folder / f"prompts-seed{seed}", sweep, len(sweep["test_acc"]),
                     SampleOptions(**{**s["weights"], "seed": seed}))[0]
        for seed in seeds or [p["seed"]]
    ]  # fmt: skip
    report = evaluate_zoos(
        [dense, *sweeps], folder / "eval", reference=zoo_dir,
        sgd_seconds_per_step=sgd_seconds_per_step(zoo_dir, **recipe.baselines["sgd_timing"]), progress=False,
    )  # fmt: skip
    figures = read_json(report.parent / "results.json", "results")["benchmarks"]
    b3 = {k.split("/")[1]: v for k, v in figures.items() if k.startswith("spearman_prompt/prompts-")}
    mae = {
        r["set"].split("/")[1]: r["value"]
        for r in read_json(report.parent / "results.json", "results")["evaluations"]
        if r["metric"] == "test_acc_mae" and "prompts-" in r["set"]
    }
    result = {
        "acc_ratio": figures["acc_ratio/dense"],
        "spearman_prompt": b3,
        "spearman_prompt_min": min(b3.values()),
        "prompt_mae": mae,
        "memorization_parts_met": figures["memorization_parts_met/dense"],
        "frontier_margin": figures.get("frontier_margin/dense"),
        "max_iou_median": figures.get("max_iou_median/dense"),
        "frac_novel": figures["frac_novel/dense"],
        "speedup_per_net": figures.get("speedup_per_net/dense"),
        "train_steps_per_s": steps / train_seconds if train_seconds > 1 else None,
        "prompt_range": [lo, hi],
        "report": str(report),
        "settings": {
            "zoo": str(zoo_dir),
            "preset": preset,
            "seeds": seeds or [p["seed"]],
            "train_steps": steps,
            "zoo_seconds": zoo_seconds,
            "threads": torch.get_num_threads(),
        },  # fmt: skip
    }
    result["met"] = {
        "B2": met("B2", result["acc_ratio"]),
        "B3": all(met("B3", v) for v in b3.values()),
        "B4": met("B4", result["memorization_parts_met"]),
    }
    write_json(Path(out), result)
    print(json.dumps({k: v for k, v in result.items() if k != "settings"}, indent=1))
    print(f"targets: {', '.join(f'{b} {op} {t}' for b, (_, op, t) in TARGETS.items() if b in result['met'])}")
    return result


if __name__ == "__main__":
    auto_cli(main)
