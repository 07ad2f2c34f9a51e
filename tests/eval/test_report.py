"""Every report section on small rows: its heading, its figures, its plot, one row per zoo."""

from __future__ import annotations

import json
import math

import pytest

from mole.eval import report
from mole.eval.benchmarks import memorization_parts, prompt_alignment, sparse_levels, sparsity_curves
from mole.eval.memorization import judge
from tests.eval.test_memorization import BASE, FAMILY, LEVEL, TRAIN, sets

GEN = sets([[*range(10 * k, 10 * k + 5), *range(90, 93)] for k in range(4)])  # above the frontier

METRICS = {"test_acc_mean": 0.5, "test_acc_max": 0.7, "nn_cosine_median": 0.3, "nn_cosine_max": 0.4,
           "nn_cosine_matched_median": 0.35, "frac_novel": 1.0, "pairwise_cosine_mean": 0.2,
           "pairwise_disagreement_mean": 0.6}  # fmt: skip


def gen(acc: float, prompt: dict | None = None, loss: float = 1.0, **extra) -> dict:
    return {"test_acc": acc, "test_loss": loss, "sparsity": (prompt or {}).get("sparsity", 0.0),
            "variant": "generated", "variant_config": "{}",
            "extra": json.dumps({"prompt": prompt or {}, **extra})}  # fmt: skip


def zoo_row(variant: str, acc: float, config: dict | None = None, sparsity: float = 0.0) -> dict:
    return {"member_id": f"{variant}-{acc}", "variant": variant, "variant_config": json.dumps(config or {}),
            "test_acc": acc, "test_loss": 1.0, "sparsity": sparsity, "bits": None, "rank": None, "final": True,
            "task": "digits", "architecture": "mlp", "arch_options": '{"hidden": [4]}', "extra": None}  # fmt: skip


def text(lines: list[str]) -> str:
    return "\n".join(lines)


def test_markdown_cells():
    assert report.fmt(0.12345) == "0.123" and report.fmt(None) == report.fmt(math.nan) == "-"
    assert report.table(["a", "b"], [[1, 0.5]]) == "| a | b |\n|---|---|\n| 1 | 0.500 |"
    assert report.named(["x"], [[1]]) == ([], [[1]])  # one zoo: no zoo column
    assert report.named(["x", "y"], [[1], [2]]) == (["zoo"], [["x", 1], ["y", 2]])


def test_header_says_what_it_knows():
    rows = [zoo_row("dense", 0.5)]
    assert report.header_section(rows, "tiny", 8, 6.4)[:3] == [
        "# mole report (tiny preset)",
        "",
        'Task `digits`, architecture `mlp` {"hidden": [4]}; 8 SGD-trained dense members; whole pipeline 6 s.',
    ]
    plain = report.header_section(rows, lines=["- `a`: 3 networks"])
    assert (
        plain[0] == "# mole report" and plain[2].endswith('{"hidden": [4]}.') and "- `a`: 3 networks" in plain
    )


def test_benchmarks_one_row_per_figure_and_zoo():
    md = text(report.benchmarks_section({"acc_ratio": 0.98, "frac_novel_raw": 1.0, "speedup_per_net/a": 3.0,
                                         "speedup_per_net/b": 30.0, "quickstart_seconds": 700.0}))  # fmt: skip
    assert "| B2 | generated dense nets" in md and "| 0.980 | >= 0.97 | yes |" in md
    assert "| B7 (a) |" in md and "| 3.000 | >= 10.0 | no |" in md and "| B7 (b) |" in md
    assert "| 700.000 | <= 600.0 | no |" in md
    assert "B3" not in md and "frac_novel_raw" not in md  # no figure, no row; raw figures have none
    assert report.benchmarks_section({}) == []


def test_zoo_section_groups_by_variant_and_level():
    rows = [zoo_row("dense", 0.4), zoo_row("dense", 0.6), zoo_row("magnitude", 0.3, {"sparsity": 0.5}, 0.5)]
    md = text(report.zoo_section(rows))
    assert "| dense | {} | 2 | 0.000 | - | - | 0.5000 ± 0.1000 |" in md
    assert '| magnitude | {"sparsity": 0.5} | 1 | 0.500 | - | - | 0.3000 ± 0.0000 |' in md


def test_accuracy_section_rows_per_zoo():
    sgd = [zoo_row("dense", 0.8), zoo_row("dense", 0.6)]
    md = text(report.accuracy_section({"a": [gen(0.7, loss=0.5)], "b": [gen(0.1), gen(0.3)]}, sgd, "Note."))
    assert "## Generated vs SGD (B2)\n\nNote." in md
    assert "| SGD members | 2 | 0.7000 ± 0.1000 | 1.000 |" in md
    assert "| a | 1 | 0.7000 ± 0.0000 | 0.500 |" in md and "| b | 2 | 0.2000 ± 0.1000 | 1.000 |" in md
    assert "against 2 SGD-trained members" in text(report.accuracy_section({"a": [gen(0.7)]}, sgd))


def test_temperature_section_highest_first_with_zoo_names_when_given():
    entries = [(None, 0.0, {**METRICS, "test_acc_mean": 0.3}), (None, 1.0, METRICS), (None, 0.5, METRICS)]
    md = text(report.temperature_section(entries)).splitlines()
    table = [line for line in md if line.startswith("| ") and "temperature" not in line]
    assert [line.split(" | ")[0] for line in table] == ["| 1.000", "| 0.500", "| 0.000"]
    named = text(report.temperature_section([("a", 1.0, METRICS), ("b", 1.0, METRICS)]))
    assert "| zoo | temperature |" in named and "| b | 1.000 |" in named


def test_prompt_section_writes_its_plot(tmp_path):
    rows = [gen(a, {"test_acc": p}) for p, a in [(0.2, 0.3), (0.5, 0.4), (0.8, 0.9)]]
    md = text(report.prompt_section({"gen": (rows, prompt_alignment(rows))}, (0.1, 0.9), tmp_path / "plots"))
    assert "3 networks prompted at 3 test accuracies from 0.200 to 0.800: Spearman 1.000, MAE 0.100" in md
    assert "rising with every prompt: yes." in md and "![prompted vs achieved](plots/prompts.png)" in md
    assert (tmp_path / "plots" / "prompts.png").stat().st_size > 1000
    two = {"a": (rows, prompt_alignment(rows)), "b": (rows[:1], prompt_alignment(rows[:1]))}
    md = text(report.prompt_section(two, (0.1, 0.9), tmp_path / "plots", "networks over the range"))
    assert "- `a`: 3 networks over the range: Spearman 1.000" in md
    assert (
        "- `b`: 1 networks over the range: Spearman -, MAE 0.100; mean achieved accuracy rising with every prompt: -."
        in md
    )


def test_novelty_section():
    assert "| 0.300 | 0.400 | 0.350 | 1.000 | 0.200 | 0.600 |" in text(report.novelty_section({"a": METRICS}))
    assert "| zoo | nn cosine median |" in text(report.novelty_section({"a": METRICS, "b": METRICS}))


def test_memorization_section_and_its_record(tmp_path):
    t = judge(GEN, TRAIN, BASE, FAMILY, LEVEL, draws=50)
    parts = memorization_parts(t)
    md = text(report.memorization_section({"a": (t, parts)}, tmp_path / "plots"))
    assert md.startswith("## Memorization test (B4)") and "(50 draws)" in md
    assert "SGD members: test accuracy 0.900, max-IoU median 0.000 (each against the others)" in md
    row = f"| 0.920 | 0.385 | 0.231 | 0.715 | 0.823 | 0.097 | [{report.fmt(t.margin_low)}, "
    assert row in md and "| yes / no / no / yes | 2/4 |" in md
    assert "![accuracy vs novelty](plots/memorization.png)" in md
    assert (tmp_path / "plots" / "memorization.png").stat().st_size > 1000
    two = text(report.memorization_section({"a": (t, parts), "b": (t, parts)}, tmp_path / "plots"))
    assert "| zoo | test acc |" in two and "| b | 0.920 |" in two
    record = report.memorization_record(t, parts)
    assert record["parts"] == parts and record["interval"] == [t.margin_low, t.margin_high]
    assert record["curves"]["noise"] == [[1 / 3, 0.7], [1.0, 0.9]]
    json.dumps(record)  # results.json can hold it


def test_sparse_section_against_the_baselines(tmp_path):
    rows = [gen(0.9, {"sparsity": 0.5}), gen(0.2, {"sparsity": 0.8})]
    pruning = [zoo_row("magnitude", 0.8, {"scope": "global", "finetune_epochs": 0, "sparsity": 0.5}, 0.5),
               zoo_row("imp", 0.85, {}, 0.5)]  # fmt: skip
    levels = sparse_levels(sparsity_curves(rows, pruning))
    md = text(
        report.sparse_section({"g": (rows, levels)}, pruning, tmp_path / "plots", "the same SGD members")
    )
    assert "generated (prompted sparsity, projected exactly; prompt sparsity=0.500" not in md  # two prompts
    assert "Test accuracy at each sparsity: generated (prompted sparsity, projected exactly), one-shot global " \
           "magnitude pruning without fine-tuning, IMP with rewinding" in md  # fmt: skip
    assert md.count("; all from the same SGD members.") == 1
    assert (
        "| 0.500 | 0.900 | 0.800 | 0.850 | - | yes |" in md and "| 0.800 | 0.200 | - | 0.850 | - | no |" in md
    )
    assert (tmp_path / "plots" / "sparsity.png").is_file()
    alone = text(report.sparse_section({"a": (rows, levels), "b": (rows, levels)}, [], tmp_path / "p2"))
    assert (
        "no pruning baselines were given." in alone
        and "| zoo | sparsity |" in alone
        and "| b | 0.800 |" in alone
    )


def test_sparse_section_says_how_one_prompt_was_projected(tmp_path):
    rows = [gen(0.9, {"test_acc": 0.9}, project={"sparsity": 0.5}, guidance=3.0)] * 2
    md = text(report.sparse_section({"g": (rows, [])}, [], tmp_path))
    assert (
        "projected onto the sparsity by global magnitude" in md
        and "prompt test_acc=0.900; guidance 3.0" in md
    )
    assert "No sparse networks were generated." in md


def test_mask_section_pairs_by_init(tmp_path):
    masks = [gen(0.6, {"sparsity": 0.5}, init_seed=1)]
    popup = [gen(0.5, init_seed=1, random_mask_test_acc=0.1)]
    md = text(report.mask_section({"generated": (masks, popup)}, tmp_path / "plots"))
    assert "1 generated masks at 50% over the frozen random inits" in md and "paired by init seed" in md
    assert (
        "| generated | 1 | 0.6000 ± 0.0000 |\n| edge-popup | 1 | 0.5000 ± 0.0000 |\n| random mask | 1 |" in md
    )
    assert (tmp_path / "plots" / "masks.png").is_file()
    two = text(report.mask_section({"a": (masks, popup), "b": (masks, [])}, tmp_path / "plots", "Given."))
    assert "Given." in two and "| edge-popup (a) | 1 |" in two and "(b)" not in two
    assert "no edge-popup rows on these inits" in text(report.mask_section({"a": (masks, [])}, tmp_path))
    built = [gen(0.55, init_seed=1)]  # the least-squares construction on the same init: its own row
    md = text(report.mask_section({"generated": (masks, popup, built)}, tmp_path / "plots"))
    assert "| generated | 1 | 0.6000 ± 0.0000 |\n| construction | 1 | 0.5500 ± 0.0000 |\n| edge-popup |" in md


def test_constraints_section_columns_for_what_was_prompted():
    md = text(
        report.constraints_section({"generated/dense": {}, "generated/sparse": {"frac_sparsity_met": 1.0}})
    )
    assert (
        "prompted sparsity exactly" in md
        and "| generated/dense | - |" in md
        and "| generated/sparse | 1.000 |" in md
    )
    md = text(report.constraints_section({"q": {"frac_bits_met": 0.5}}))
    assert "| set | sparsity met | bits met |" in md and "| q | - | 0.500 |" in md


def test_time_section():
    m = {
        "sampling_s_per_net": 0.01,
        "sgd_s_per_net": 0.2,
        "target_acc": 0.9,
        "sgd_frac_reached": 1.0,
        "speedup": 20.0,
    }
    md = text(report.time_section({"a": (8, m)}, 3e-4))
    assert "| 0.010 | 0.200 | 0.900 | 1.000 | 20.000 |" in md
    assert "SGD: 0.30 ms per step of one network" in md and "sampling: 8 networks in one batch" in md
    assert "| zoo |" in text(report.time_section({"a": (8, m), "b": (4, m)}, 3e-4))


def test_theory_sections_leave_out_absent_parts():
    ss = [{"n": 4, "hidden": "8-4", "weight_err_max": 0.1, "output_err_max": 0.05, "target_test_acc": 0.9,
           "pruned_test_acc": 0.85}]  # fmt: skip
    md = text(report.subset_sum_section(ss, "subset_sum/subset_sum.png"))
    assert (
        "| 4 | 8-4 | 0.100 | 0.050 | 0.900 | 0.850 |" in md
        and "![subset sum](subset_sum/subset_sum.png)" in md
    )
    assert "![" not in text(report.subset_sum_section(ss))
    npp = [{"n": 8, "kappa": k, "p_perfect": p, "p_predicted": p} for k, p in [(0.5, 1.0), (1.0, 0.0)]]
    md = text(report.theory_section([], npp, {"npp": "theory/npp.png"}))
    assert "| 8 | 0.750 | 0.750 |" in md and "![npp](theory/npp.png)" in md
    assert "Random subset sum" not in md
    rss = [{"dist": "continuous", "bits": None, "n": n, "eps": e, "p_success": float(n >= 4)}
           for n in (2, 4) for e in (0.1, 0.01)]  # fmt: skip
    assert "- continuous: too few ε reached to fit a line" in text(report.theory_section(rss, []))


def test_stages_section():
    assert "| total | 7.500 |" in text(report.stages_section({"zoo": 2.5, "total": 7.5}))


@pytest.mark.parametrize("sets", [{}, {"a": [gen(0.5)]}])
def test_sections_do_not_fail_on_few_rows(sets):
    """A section with its inputs present renders even for a single row (std 0, no pairs)."""
    assert report.accuracy_section(sets, [zoo_row("dense", 0.5)])[0] == "## Generated vs SGD (B2)"
