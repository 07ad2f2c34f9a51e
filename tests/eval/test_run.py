"""`evaluate_zoos` on zoos the quickstart did not make: a tiny zoo, `generate_zoo` outputs of a tiny model
trained on it, a supermask zoo and baseline runs; each report holds the sections that apply and no other."""

from __future__ import annotations

import json
import re

import pytest

from mole.baselines.run import run_baselines
from mole.data import load_task
from mole.diffusion.generated import generate_zoo
from mole.diffusion.options import SampleOptions
from mole.errors import ConfigError
from mole.eval import benchmarks as bench
from mole.eval import load_rows
from mole.eval.run import evaluate_zoos
from mole.theory.io import write_csv
from mole.zoo.build import build_zoo
from mole.zoo.spec import ZooSpec
from tests.conftest import TINY_ZOO
from tests.diffusion.test_sample import train_model

MEMORIZATION_FIGURES = {"memorization_parts_met", "max_iou_median", "max_iou_median_sgd", "pairwise_iou_median",
                        "pairwise_iou_median_sgd", "frontier_margin", "frontier_margin_low", "frontier_margin_high"}  # fmt: skip
SECTIONS = {
    "Benchmarks": "## Benchmarks",
    "Zoo": "## Zoo",
    "B2": "## Generated vs SGD (B2)",
    "Temperature": "### Temperature",
    "B3": "## Prompt alignment (B3)",
    "B4": "## Novelty and diversity (B4)",
    "Memorization": "## Memorization test (B4)",
    "B5": "## Sparse networks (B5)",
    "B6": "## Supermasks on unseen random inits (B6)",
    "Constraints": "## Constraints",
    "B7": "## Time to a network (B7)",
    "Subset sum": "## Strong lottery tickets by subset sum",
    "Theory": "## Theory",
    "Stages": "## Stages",
}


def sections_of(report) -> set[str]:
    text = report.read_text()
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (report.parent / image).is_file(), image
    return {name for name, heading in SECTIONS.items() if heading in text.splitlines()}


def build(tmp_path_factory, name: str, **spec):
    out = tmp_path_factory.mktemp(name) / name
    build_zoo(ZooSpec.from_dict({**TINY_ZOO, "name": name, **spec}), out, progress=False)
    return out


@pytest.fixture(scope="module")
def zoos(tmp_path_factory):
    """Folders as `mole zoo build`, `mole sample` and `mole baselines run` write them."""
    zoo = build(tmp_path_factory, "tiny-eval")
    model = train_model(zoo, tmp_path_factory.mktemp("eval-model"))
    gen = tmp_path_factory.mktemp("generated")
    acc = sorted(r["test_acc"] for r in load_rows(zoo))  # prompts within the model's trained range
    sweep = {"test_acc": acc[:4], "variant": "dense"}
    dense_a, _ = generate_zoo(model, gen / "gen-a", sweep, 4, SampleOptions(steps=2, seed=0))
    dense_b, _ = generate_zoo(model, gen / "gen-b", {"test_acc": acc[-1], "variant": "dense"}, 2,
                              SampleOptions(steps=2, seed=1, temperature=0.0))  # fmt: skip
    sparse, _ = generate_zoo(model, gen / "sparse", {"test_acc": acc[-1], "variant": "dense"}, 2,
                             SampleOptions(steps=2, seed=2), project={"sparsity": [0.5, 0.8]})  # fmt: skip
    masks = build(tmp_path_factory, "tiny-masks", members=4,
                  variants=[{"name": "supermask", "options": {"sparsity": 0.5, "epochs": 1}}])  # fmt: skip
    data = load_task("digits")
    base = tmp_path_factory.mktemp("baselines")
    run_baselines(load_rows(zoo, final_only=False), data,
                  {"magnitude": {"sparsity": [0.5, 0.8], "scope": "global"}, "random": {"sparsity": [0.5]}},
                  base / "pruning")  # fmt: skip
    run_baselines(load_rows(masks), data, {"edge_popup": {"sparsity": 0.5, "epochs": 1},
                                           "lsq_supermask": {"sparsity": 0.5, "inputs": 256}}, base / "popup")  # fmt: skip
    return {"zoo": zoo, "a": dense_a, "b": dense_b, "sparse": sparse, "masks": masks,
            "pruning": base / "pruning", "popup": base / "popup"}  # fmt: skip


def test_a_sampled_zoo_and_its_training_zoo(zoos, tmp_path, capsys):
    report = evaluate_zoos([zoos["a"]], tmp_path / "out", reference=zoos["zoo"])
    assert report == tmp_path / "out" / "report.md"
    assert sections_of(report) == {"Benchmarks", "Zoo", "B2", "B3", "B4", "Memorization", "Constraints"}
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results) == {"benchmarks", "targets", "evaluations", "memorization", "stage_seconds", "preset"}
    assert set(results["benchmarks"]) == {"acc_ratio", "frac_novel", "frac_novel_raw", "spearman_prompt",
                                          *MEMORIZATION_FIGURES}  # fmt: skip
    b4 = results["memorization"]["gen-a"]
    assert results["benchmarks"]["memorization_parts_met"] == sum(b4["parts"].values()) / 4
    assert results["benchmarks"]["max_iou_median"] == b4["novelty"]
    sgd_iou = {r["metric"]: r["value"] for r in results["evaluations"]
               if r["set"] == "sgd/dense" and r["evaluator"] == "misprediction_iou"}  # fmt: skip
    assert sgd_iou["max_iou_median"] == pytest.approx(b4["novelty_sgd"])  # each member against the others
    assert sgd_iou["pairwise_iou_median"] == pytest.approx(b4["diversity_sgd"])
    generated = load_rows(zoos["a"])
    sgd = [r for r in load_rows(zoos["zoo"]) if r["variant"] == "dense"]
    assert results["benchmarks"]["acc_ratio"] == pytest.approx(bench.acc_ratio(generated, sgd))
    b3 = bench.prompt_alignment(generated)
    assert results["benchmarks"]["spearman_prompt"] == pytest.approx(b3["spearman"], nan_ok=True)
    assert {r["set"] for r in results["evaluations"]} == {"generated/gen-a", "sgd/dense"}
    assert results["stage_seconds"] == {} and results["preset"] == ""
    assert sorted(p.name for p in (tmp_path / "out" / "plots").iterdir()) == [
        "memorization.png",
        "prompts.png",
    ]
    out = capsys.readouterr().out
    assert "gen-a: 4 networks, dense, prompted with test accuracies" in out and "report:" in out


def test_every_section_that_applies(zoos, tmp_path):
    theory = tmp_path / "theory"  # as `mole theory rss --out DIR` writes it
    theory.mkdir()
    rss = [{"dist": "continuous", "bits": None, "n": n, "eps": 0.1, "p_success": n / 4} for n in range(1, 5)]
    write_csv(rss, theory / "rss.csv")
    (theory / "rss.png").write_bytes(b"png")
    generated = [zoos["a"], zoos["b"], zoos["sparse"], zoos["masks"]]
    report = evaluate_zoos(generated, tmp_path / "out", reference=zoos["zoo"],
                           baselines=[zoos["pruning"], zoos["popup"]], theory=theory, sgd_seconds_per_step=1e-3,
                           progress=False)  # fmt: skip
    assert sections_of(report) == {"Benchmarks", "Zoo", "B2", "Temperature", "B3", "B4", "Memorization", "B5",
                                   "B6", "Constraints", "B7", "Theory"}  # fmt: skip
    text = report.read_text()
    assert "| gen-b | 0.000 |" in text and "![rss](../theory/rss.png)" in text
    for b in ("B2", "B3", "B4", "B7"):  # two dense zoos: a row each, named by its folder
        assert f"| {b} (gen-a) |" in text and f"| {b} (gen-b) |" in text
    assert "| B5 |" in text and "| B6 |" in text
    figures = json.loads((tmp_path / "out" / "results.json").read_text())["benchmarks"]
    assert {"acc_ratio/gen-a", "acc_ratio/gen-b", "sparse_vs_baselines_met", "mask_ratio_edge_popup"} <= set(
        figures
    )
    assert "acc_ratio" not in figures and "quickstart_seconds" not in figures
    masks, rows = load_rows(zoos["masks"]), load_rows(zoos["popup"])
    popup, built = ([r for r in rows if r["variant"] == v] for v in ("edge_popup", "lsq_supermask"))
    assert len(bench.same_inits(masks, popup)) == len(masks)  # edge-popup ran on the very same inits
    assert figures["mask_ratio_edge_popup"] == pytest.approx(bench.mask_ratio(masks, popup))
    assert len(bench.same_inits(masks, built)) == len(masks)
    assert figures["mask_gain_construction"] == pytest.approx(bench.mask_gain(masks, built))
    assert "| construction | 4 |" in text  # the construction: its own row
    constraints = text[text.index("## Constraints") : text.index("## Time")]
    assert "| generated/sparse | 1.000 |" in constraints and "| generated/tiny-masks | 1.000 |" in constraints
    assert {p.name for p in (tmp_path / "out" / "plots").iterdir()} == {
        "prompts.png",
        "memorization.png",
        "sparsity.png",
        "masks.png",
    }
    assert set(json.loads((tmp_path / "out" / "results.json").read_text())["memorization"]) == {
        "gen-a",
        "gen-b",
    }


def test_a_prompt_sweep_counts_in_b3_alone(zoos, tmp_path, capsys):
    """--prompts: the sweep gets its B3 row and no B2 / B4 evaluation (those judge nets prompted as SGD's)."""
    report = evaluate_zoos([zoos["b"]], tmp_path / "out", reference=zoos["zoo"], prompts=[zoos["a"]])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    figures = results["benchmarks"]
    assert "acc_ratio" in figures and "acc_ratio/gen-a" not in figures  # B2: gen-b alone, keyed plain
    assert set(results["memorization"]) == {"gen-b"}
    assert figures["spearman_prompt/gen-a"] == pytest.approx(
        bench.prompt_alignment(load_rows(zoos["a"]))["spearman"]
    )
    by_set = {(r["set"], r["evaluator"]) for r in results["evaluations"]}
    assert ("generated/gen-a", "prompt_alignment") in by_set
    assert not {e for s, e in by_set if s == "generated/gen-a"} & {
        "novelty",
        "diversity",
        "misprediction_iou",
    }
    assert "| B3 (gen-a) |" in report.read_text()
    assert "gen-a: 4 networks, a prompt sweep (B3)" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="^prompts: .*tiny-masks holds no dense nets prompted"):
        evaluate_zoos([zoos["b"]], tmp_path / "bad", reference=zoos["zoo"], prompts=[zoos["masks"]])
    assert not (tmp_path / "bad").exists()


def test_without_a_reference_only_prompt_alignment(zoos, tmp_path):
    report = evaluate_zoos([zoos["a"], zoos["sparse"]], tmp_path / "out", progress=False)
    # no SGD members: no B2 / B4; no baselines: the sparse section without the B5 figure
    assert sections_of(report) == {"Benchmarks", "B3", "B5", "Constraints"}
    assert "no pruning baselines were given" in report.read_text()
    assert set(json.loads((tmp_path / "out" / "results.json").read_text())["benchmarks"]) == {
        "spearman_prompt"
    }


def test_bad_folders_are_one_line_errors(zoos, tmp_path_factory, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as e:
        evaluate_zoos([zoos["a"], tmp_path / "nothing"], out, reference=zoos["zoo"], progress=False)
    assert e.value.field == "generated" and f"{tmp_path / 'nothing'} is not a zoo folder" in str(e.value)
    assert "\n" not in str(e.value) and not out.exists()  # nothing written
    with pytest.raises(ConfigError, match=f"^baselines: {tmp_path / 'nothing'} is not a zoo folder"):
        evaluate_zoos([zoos["a"]], out, baselines=[tmp_path / "nothing"], progress=False)
    other = build(tmp_path_factory, "tiny-narrow", members=2, group_size=2, arch_options={"hidden": [8]})
    with pytest.raises(
        ConfigError, match=f"^reference: {other} has architecture .*hidden.: .8.*, the generated"
    ):
        evaluate_zoos([zoos["a"]], out, reference=other, progress=False)
    with pytest.raises(ConfigError, match="^wandb: got 'on'; valid: offline, online, disabled"):
        evaluate_zoos([zoos["a"]], out, wandb="on", progress=False)
    assert not out.exists()


def test_mole_eval_on_a_sample_output_and_its_training_zoo(zoos, tmp_path, capsys):
    """The command line: `mole eval --generated [Z] --reference ZOO --baselines [B] --out DIR`."""
    from mole.cli import main

    out = tmp_path / "cli"
    argv = ["eval", "--generated", f"[{zoos['a']},{zoos['sparse']}]", "--reference", str(zoos["zoo"]),
            "--baselines", f"[{zoos['pruning']}]", "--out", str(out), "--progress", "false"]  # fmt: skip
    assert main(argv) == 0
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    assert {"B2", "B3", "B5"} <= sections_of(out / "report.md")
    assert main(argv[:-2]) == 0  # with progress: off a terminal, one summary line of the evaluation
    assert re.search(r"^evaluating: 10/10 report parts, \d+\.\d s$", capsys.readouterr().out, re.M)
    assert main(["eval", "--reference", str(zoos["zoo"]), "--out", str(out)]) == 2
    assert "mole: error: generated: give the zoo folders to evaluate" in capsys.readouterr().err
    assert main(["eval", "--generated", f"[{zoos['a']}]"]) == 2
    assert "mole: error: out: give the report's folder" in capsys.readouterr().err
    assert main(["eval", "--run", str(tmp_path), "--out", str(out)]) == 2
    assert (
        "mole: error: out: --run rewrites a quickstart run's report: give it alone" in capsys.readouterr().err
    )
