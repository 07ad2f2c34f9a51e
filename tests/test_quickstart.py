"""The whole pipeline at the tiny preset: every stage runs, the report has every section, reruns resume."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import yaml

from mole.cli import main
from mole.eval import load_rows
from mole.eval.report import TARGETS
from mole.pipeline import load_recipe

pytestmark = pytest.mark.slow  # the whole pipeline, end to end

SECTIONS = [
    "## Benchmarks",
    "## Zoo",
    "## Generated vs SGD (B2)",
    "## Prompt alignment (B3)",
    "## Novelty and diversity (B4)",
    "## Memorization test (B4)",
    "## Sparse networks (B5)",
    "## Supermasks on unseen random inits (B6)",
    "## Constraints",
    "## Time to a network (B7)",
    "## Strong lottery tickets by subset sum",
    "## Theory",
    "## Stages",
]


def quickstart_tiny(out) -> int:
    return main(
        ["quickstart", "--out", str(out), "--preset", "tiny", "--wandb", "disabled", "--progress", "false"]
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart") / "run"
    assert quickstart_tiny(out) == 0
    return out


def test_report_has_every_section_and_its_plots(run):
    text = (run / "report.md").read_text()
    positions = [text.find(s) for s in SECTIONS]
    assert all(p >= 0 for p in positions), [s for s, p in zip(SECTIONS, positions) if p < 0]
    assert positions == sorted(positions)
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (run / image).is_file() and (run / image).stat().st_size > 1000, image
    assert len(re.findall(r"^\| B\d ", text, flags=re.M)) == len(TARGETS)
    assert "projected onto the sparsity by global magnitude" in text  # how the sparse set was made
    sparse = text[text.find("## Sparse networks (B5)") : text.find("## Supermasks")]
    assert f"guidance {load_recipe('tiny').sample['weights']['guidance']}" in sparse  # and at which guidance


def test_stages_take_the_recipes_settings(run):
    r = load_recipe("tiny")
    model = yaml.safe_load((run / "diffusion" / "weights" / "config.yaml").read_text())["model"]
    masks = yaml.safe_load((run / "diffusion" / "masks" / "config.yaml").read_text())["model"]
    assert model["class_path"] == "mole.diffusion.system.DiffusionSystem"
    assert masks["class_path"] == "mole.masks.system.MaskSystem"
    assert masks["init_args"]["mask_prior"] == r.masks["model"]["init_args"]["mask_prior"]
    model, want = model["init_args"], r.weights["model"]["init_args"]
    assert model["function_inputs"] == want["function_inputs"] == 64  # the tiny override
    assert model["function_sparsities"] == want["function_sparsities"]
    assert model["net"]["init_args"]["width"] == 32
    guidance = {
        name: {json.loads(r["extra"])["guidance"] for r in load_rows(run / "generated" / name)}
        for name in ("dense", "sparse", "masks")
    }
    weights, masks = r.sample["weights"]["guidance"], r.sample["masks"]["guidance"]
    assert weights != masks  # or the check below cannot fail
    assert guidance == {"dense": {weights}, "sparse": {weights}, "masks": {masks}}


def test_results_hold_measured_figures(run):
    results = json.loads((run / "results.json").read_text())
    bench = results["benchmarks"]
    for key, _, _ in TARGETS.values():
        assert isinstance(bench[key], float)
    # The figures come from the written members, not from constants.
    generated = [
        r for r in results["evaluations"] if r["set"] == "generated/dense" and r["metric"] == "test_acc_mean"
    ]
    sgd = [r for r in results["evaluations"] if r["set"] == "sgd/dense" and r["metric"] == "test_acc_mean"]
    assert bench["acc_ratio"] == pytest.approx(generated[0]["value"] / sgd[0]["value"])
    assert 0 < bench["quickstart_seconds"] < 120
    assert not math.isnan(bench["mask_ratio_edge_popup"])
    # the construction ran on the masks' own inits: its row, and the points the mask model adds to it
    masks, built = load_rows(run / "generated" / "masks"), load_rows(run / "baselines" / "lsq_supermask")
    assert sorted(r["seed"] for r in built) == sorted(r["seed"] for r in masks)
    gain = np.mean([r["test_acc"] for r in masks]) - np.mean([r["test_acc"] for r in built])
    assert bench["mask_gain_construction"] == pytest.approx(gain)
    assert "| construction |" in (run / "report.md").read_text()
    constraints = {r["set"]: r["value"] for r in results["evaluations"] if r["metric"] == "frac_sparsity_met"}
    assert constraints == {"generated/sparse": 1.0, "generated/masks": 1.0}


def test_rerun_resumes_and_eval_rewrites_the_report(run, capsys):
    stamps = {p: p.stat().st_mtime_ns for p in (run / "generated").rglob("*.parquet")}
    stamps.update({p: p.stat().st_mtime_ns for p in (run / "theory").glob("*")})
    assert stamps
    stages = json.loads((run / "stages.json").read_text())
    assert stages["complete"] and set(stages["seconds"]) >= {"zoo", "train weights", "sample", "total"}
    assert quickstart_tiny(run) == 0
    after = {p: p.stat().st_mtime_ns for p in (run / "generated").rglob("*.parquet")}
    after.update({p: p.stat().st_mtime_ns for p in (run / "theory").glob("*")})
    assert after == stamps
    # The rerun found everything done: the recorded timings (B8) are still the first run's.
    assert json.loads((run / "stages.json").read_text())["seconds"] == stages["seconds"]
    (run / "report.md").unlink()
    assert main(["eval", "--run", str(run), "--wandb", "offline"]) == 0
    assert "## Benchmarks" in (run / "report.md").read_text()
    assert list((run / "wandb").glob("offline-run-*")), "the offline W&B run was not written"
    assert "report:" in capsys.readouterr().out


def test_bad_input(tmp_path, capsys):
    assert main(["quickstart", "--out", str(tmp_path / "x"), "--preset", "huge", "--progress", "false"]) == 2
    assert "mole: error: preset: unknown 'huge'; valid: default, tiny" in capsys.readouterr().err
    assert main(["eval", "--run", str(tmp_path)]) == 2
    assert "is not a finished quickstart run" in capsys.readouterr().err


def test_sgd_timing_is_the_median_of_repeats_after_a_warm_up(run, monkeypatch):
    from mole import pipeline

    real, calls = pipeline.train_stacked, []

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "train_stacked", counted)
    seconds = pipeline.sgd_seconds_per_step(run / "zoo", steps=4, repeats=3)
    assert len(calls) == 4  # one untimed warm-up, three timed runs
    assert 0 < seconds < 1
