"""The evaluation report: `report.md` with tables and PNG plots, `results.json`, and W&B when on.

Sections (each always present; a section with nothing to show says so):
    Benchmarks            B2-B8 of DESIGN.md section 5 against their targets
    Zoo                   final test accuracy per variant and level
    Generated vs SGD      B2: dense networks prompted with each SGD member's accuracy
    Prompt alignment      B3: prompted against achieved accuracy (plot)
    Novelty and diversity B4: nearest training member after weight-matching alignment
    Sparse networks       B5: accuracy against sparsity, generated vs magnitude, IMP, random (plot)
    Supermasks            B6: generated masks vs edge-popup and random masks on the same unseen inits
    Constraints           sparsity / bits / rank exactly met by the generated networks
    Time to a network     B7: sampling vs SGD to the same accuracy
    Subset-sum tickets    weight and output error of the Pensia et al. construction against n (plot)
    Theory                random subset sum and number partitioning phase diagrams (plots)
    Stages                wall seconds per pipeline stage (B8)
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mole.data import TaskData
from mole.eval import EvalSet, evaluate, prompt_of
from mole.eval.base import json_column
from mole.zoo.store import atomic_path, write_json

TARGETS = {  # DESIGN.md section 5: (figure, comparison, target)
    "B2": ("acc_ratio", ">=", 0.97),
    "B3": ("spearman_prompt", ">=", 0.9),
    "B4": ("frac_novel", ">=", 0.9),
    "B5": ("sparse_vs_baselines_met", ">=", 1.0),
    "B6": ("mask_ratio_edge_popup", ">=", 0.9),
    "B7": ("speedup_per_net", ">=", 10.0),
    "B8": ("quickstart_seconds", "<=", 600.0),
}
DESCRIPTIONS = {
    "B2": "generated dense nets: mean test accuracy / SGD members' mean (same prompts)",
    "B3": "Spearman, prompted vs achieved test accuracy over the zoo's range",
    "B4": "share of generated nets with nearest-member cosine < 0.98 (counts only with B2 met)",
    "B5": "generated sparse nets at 50/80/90% >= one-shot magnitude and >= 95% of IMP (share of levels)",
    "B6": "generated supermasks on unseen inits at 50%: accuracy / edge-popup's on the same inits",
    "B7": "seconds per net: SGD to the generated nets' accuracy / sampling (batch of 64)",
    "B8": "quickstart end to end, seconds (every stage but writing this report, a few seconds)",
}


def fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def metrics(rows: list[dict]) -> dict[str, float]:
    return {r["metric"]: r["value"] for r in rows}


def accs(rows: Sequence[Mapping]) -> np.ndarray:
    return np.asarray([r["test_acc"] for r in rows], dtype=float)


def mean_std(x: np.ndarray) -> str:
    return f"{x.mean():.4f} ± {x.std():.4f}" if x.size else "-"


def level_of(row: Mapping) -> float:
    """The sparsity a row was asked for (its prompt) or, failing that, has."""
    return float(prompt_of(row).get("sparsity", row["sparsity"]))


def by_level(rows: Sequence[Mapping], key=level_of) -> dict[float, np.ndarray]:
    out: dict[float, list[float]] = defaultdict(list)
    for r in rows:
        out[round(key(r), 4)].append(r["test_acc"])
    return {k: np.asarray(v) for k, v in sorted(out.items())}


def sparsity_curves(
    sparse: Sequence[Mapping], pruning: Sequence[Mapping]
) -> dict[str, dict[float, np.ndarray]]:
    """Test accuracies by sparsity: generated (by prompted level) and each pruning baseline."""
    return {
        "generated": by_level(sparse),
        **{name: by_level([r for r in pruning if r["variant"] == name], key=lambda r: r["sparsity"])
           for name in ("magnitude", "imp", "random")},
    }  # fmt: skip


def sparse_levels(curves: Mapping[str, dict[float, np.ndarray]]) -> list[dict]:
    """B5 per generated level: mean accuracies of generated, magnitude and random at that level, IMP
    interpolated between its rounds' sparsities; met when generated >= magnitude and >= 0.95 x IMP."""
    imp_levels = curves["imp"]
    out = []
    for s, g in curves["generated"].items():
        mag, rnd = curves["magnitude"].get(s), curves["random"].get(s)
        imp = (
            float(np.interp(s, list(imp_levels), [v.mean() for v in imp_levels.values()]))
            if imp_levels
            else math.nan
        )
        ok = mag is not None and g.mean() >= mag.mean() and not math.isnan(imp) and g.mean() >= 0.95 * imp
        out.append({"sparsity": s, "generated": float(g.mean()),
                    "magnitude": math.nan if mag is None else float(mag.mean()), "imp_interp": imp,
                    "random": math.nan if rnd is None else float(rnd.mean()), "met": bool(ok)})  # fmt: skip
    return out


# ---------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _plt().close(fig)
    return path


def plot_prompts(
    prompted: np.ndarray, achieved: np.ndarray, zoo_range: tuple[float, float], path: Path
) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(prompted, achieved, s=14, alpha=0.7, label="generated")
    lo, hi = zoo_range
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="achieved = prompted")
    ax.set(xlabel="prompted test accuracy", ylabel="achieved test accuracy", title="Prompt alignment")
    ax.legend()
    return save(fig, path)


def plot_sparsity(curves: Mapping[str, dict[float, np.ndarray]], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, levels in curves.items():
        if not levels:
            continue
        s = np.asarray(list(levels))
        m = np.asarray([v.mean() for v in levels.values()])
        e = np.asarray([v.std() for v in levels.values()])
        ax.errorbar(s, m, yerr=e, marker="o", capsize=3, label=name)
    ax.set(
        xlabel="sparsity (fraction of weights removed)",
        ylabel="test accuracy",
        title="Accuracy against sparsity",
    )
    ax.legend()
    ax.grid(alpha=0.3)
    return save(fig, path)


def plot_masks(values: Mapping[str, np.ndarray], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    names = list(values)
    ax.bar(names, [values[n].mean() if values[n].size else 0 for n in names],
           yerr=[values[n].std() if values[n].size else 0 for n in names], capsize=4)  # fmt: skip
    ax.set(ylabel="test accuracy", title="Masks over the same unseen random inits (50%)")
    return save(fig, path)


# ---------------------------------------------------------------------------- the report
def write_report(
    out: str | Path,
    zoo_rows: list[dict],
    generated: Mapping[str, list[dict]],
    baselines: Mapping[str, list[dict]],
    theory: Mapping[str, list[dict]],
    data: TaskData,
    sampling_seconds: Mapping[str, float],
    sgd_seconds_per_step: float,
    stage_seconds: Mapping[str, float],
    preset: str = "",
    wandb: str = "disabled",
) -> Path:
    """Evaluate everything, write OUT/report.md, OUT/plots/*.png and OUT/results.json; log to W&B.

    Args:
        out: the run folder (paths in the report are relative to it).
        zoo_rows: every row of the training zoo (all snapshots).
        generated: "dense" (one per SGD member, prompted with its accuracy), "prompts" (a sweep over
            the accuracy range), "sparse" (prompted sparsities), "masks" (supermasks on unseen inits).
        baselines: "pruning" (magnitude / random / imp rows), "edge_popup" (on the masks' inits).
        theory: "rss", "npp", "subset_sum" experiment rows (their PNGs sit in OUT/theory, OUT/subset_sum).
        data: the task.
        sampling_seconds: wall seconds of each generated set's sampling.
        sgd_seconds_per_step: one SGD step of one network (time to a network).
        stage_seconds: pipeline stage -> seconds ("total" included).
        preset: the quickstart preset's name.
        wandb: "offline", "online" or "disabled".
    """
    out = Path(out)
    plots = out / "plots"
    finals = [r for r in zoo_rows if r["final"]]
    dense = [r for r in finals if r["variant"] == "dense"]
    results: list[dict] = []
    bench: dict[str, float] = {}
    md = [f"# mole report ({preset} preset)", ""]
    md += [
        f"Task `{dense[0]['task']}`, architecture `{dense[0]['architecture']}` {dense[0]['arch_options']}; "
        f"{len({r['member_id'] for r in dense})} SGD-trained dense members; "
        f"whole pipeline {stage_seconds.get('total', math.nan):.0f} s.",
        "",
    ]

    def run(label: str, members: list[dict], evaluators: Mapping, reference=None) -> dict[str, float]:
        rows = evaluate(EvalSet(members, reference, data, label), evaluators)
        results.extend(rows)
        return metrics(rows)

    # -- B2 / B4: generated dense nets prompted with each SGD member's accuracy
    gen_dense = generated["dense"]
    m_dense = run("generated/dense", gen_dense, {"accuracy": {}, "novelty": {}, "diversity": {}, "constraints": {}},
                  reference=dense)  # fmt: skip
    run("sgd/dense", dense, {"accuracy": {}})
    acc_gen, acc_sgd = accs(gen_dense), accs(dense)
    bench["acc_ratio"] = float(acc_gen.mean() / acc_sgd.mean())
    bench["frac_novel"] = m_dense["frac_novel"] if bench["acc_ratio"] >= TARGETS["B2"][2] else 0.0
    bench["frac_novel_raw"] = m_dense["frac_novel"]

    # -- B3: prompt sweep
    sweep = generated["prompts"]
    m_prompts = run(
        "generated/prompts", sweep, {"prompt_alignment": {"conditions": ["test_acc"]}, "accuracy": {}}
    )
    prompted = np.asarray([prompt_of(r)["test_acc"] for r in sweep], dtype=float)
    bench["spearman_prompt"] = m_prompts.get("test_acc_spearman", math.nan)
    zoo_acc = accs([r for r in zoo_rows if r["variant"] == "dense"])
    plot_prompts(prompted, accs(sweep), (float(zoo_acc.min()), float(zoo_acc.max())), plots / "prompts.png")

    # -- B5: sparse nets against the pruning baselines
    pruning = baselines["pruning"]
    curves = sparsity_curves(generated["sparse"], pruning)
    run("generated/sparse", generated["sparse"], {"accuracy": {"by": "sparsity"}, "constraints": {}})
    for name in ("magnitude", "imp", "random"):
        run(
            f"baseline/{name}", [r for r in pruning if r["variant"] == name], {"accuracy": {"by": "sparsity"}}
        )
    plot_sparsity(curves, plots / "sparsity.png")
    levels = sparse_levels(curves)
    met = [x["met"] for x in levels]
    sparse_rows = [[x["sparsity"], x["generated"], x["magnitude"], x["imp_interp"], x["random"],
                    "yes" if x["met"] else "no"] for x in levels]  # fmt: skip
    bench["sparse_vs_baselines_met"] = float(np.mean(met)) if met else math.nan

    # -- B6: masks on unseen inits
    masks, popup = generated["masks"], baselines["edge_popup"]
    run("generated/masks", masks, {"accuracy": {}, "constraints": {}})
    run("baseline/edge_popup", popup, {"accuracy": {}})
    random_masks = np.asarray([json.loads(r["extra"]).get("random_mask_test_acc", math.nan) for r in popup])
    mask_values = {
        "generated": accs(masks),
        "edge-popup": accs(popup),
        "random mask": random_masks[~np.isnan(random_masks)],
    }
    plot_masks(mask_values, plots / "masks.png")
    bench["mask_ratio_edge_popup"] = float(accs(masks).mean() / accs(popup).mean()) if popup else math.nan

    # -- B7: time to a network
    n_dense = max(len(gen_dense), 1)
    m_time = run("generated/dense", gen_dense, {"time_to_network": {
        "sgd_seconds_per_step": sgd_seconds_per_step, "sampling_seconds": sampling_seconds["dense"]}},
        reference=[r for r in zoo_rows if r["variant"] == "dense"])  # fmt: skip
    bench["speedup_per_net"] = m_time.get("speedup", math.nan)
    bench["quickstart_seconds"] = float(stage_seconds.get("total", math.nan))

    # -- benchmarks table
    md += [
        "## Benchmarks",
        "",
        "Figures of this run against DESIGN.md §5 (B1 is `scripts/bench_zoo.py`).",
        "",
    ]
    rows = []
    for b, (key, op, target) in TARGETS.items():
        v = bench.get(key, math.nan)
        ok = (v >= target) if op == ">=" else (v <= target)
        rows.append([b, DESCRIPTIONS[b], v, f"{op} {target}", "yes" if ok and not math.isnan(v) else "no"])
    md += [table(["#", "what", "value", "target", "met"], rows), ""]

    # -- zoo
    levels: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in finals:
        levels[(r["variant"], r["variant_config"])].append(r)
    md += ["## Zoo", "", "Final test accuracy of the SGD-trained zoo, per variant and level.", ""]
    md += [table(["variant", "level", "members", "sparsity", "bits", "rank", "test acc"],
                 [[v, c, len(rs), float(np.mean([r["sparsity"] for r in rs])), rs[0]["bits"], rs[0]["rank"],
                   mean_std(accs(rs))] for (v, c), rs in sorted(levels.items())]), ""]  # fmt: skip

    md += ["## Generated vs SGD (B2)", "",
           f"{len(gen_dense)} dense networks, each prompted with one SGD member's test accuracy.", "",
           table(["set", "n", "test acc", "test loss"],
                 [["SGD members", len(dense), mean_std(acc_sgd), float(np.mean([r["test_loss"] for r in dense]))],
                  ["generated", len(gen_dense), mean_std(acc_gen), float(np.mean([r["test_loss"] for r in gen_dense]))]]),
           ""]  # fmt: skip
    temps = [(1.0, "dense")] + sorted(
        ((float(k.split("-t")[1]), k) for k in generated if k.startswith("dense-t")), reverse=True
    )
    t_rows = []
    for t, key in temps:
        m = m_dense if key == "dense" else run(f"generated/{key}", generated[key], {"accuracy": {}, "novelty": {}, "diversity": {}}, reference=dense)  # fmt: skip
        t_rows.append([t, m["test_acc_mean"], m["test_acc_max"], m["nn_cosine_median"], m["frac_novel"],
                       m["pairwise_cosine_mean"], m.get("pairwise_disagreement_mean")])  # fmt: skip
    md += ["### Temperature", "",
           "The same prompts sampled from scaled initial noise: 1 samples the learned distribution, lower "
           "values trade diversity for accuracy (0: one network per prompt). B2 and B4 use 1.", "",
           table(["temperature", "test acc mean", "test acc max", "nn cosine median", "frac novel",
                  "pairwise cosine mean", "pairwise disagreement"], t_rows), ""]  # fmt: skip
    md += ["## Prompt alignment (B3)", "",
           f"{len(sweep)} networks prompted over the zoo's accuracy range: Spearman "
           f"{fmt(bench['spearman_prompt'])}, MAE {fmt(m_prompts.get('test_acc_mae'))}.", "",
           "![prompted vs achieved](plots/prompts.png)", ""]  # fmt: skip
    md += ["## Novelty and diversity (B4)", "",
           "Cosine similarity of each generated network to its nearest SGD member, both matched to one "
           "reference by weight matching (a permuted copy of a member scores 1).", "",
           table(["nn cosine median", "nn cosine max", "frac novel (< 0.98)", "pairwise cosine mean",
                  "pairwise disagreement"],
                 [[m_dense["nn_cosine_median"], m_dense["nn_cosine_max"], m_dense["frac_novel"],
                   m_dense["pairwise_cosine_mean"], m_dense.get("pairwise_disagreement_mean")]]), ""]  # fmt: skip
    extras = [json_column(r.get("extra")) for r in generated["sparse"]]
    how = (
        "a dense-weight model's nets projected onto the sparsity by global magnitude (exact top-k; "
        "the model is not told the sparsity)"
        if any("project" in e for e in extras)
        else "prompted sparsity, projected exactly"
    )
    prompted = {json.dumps(e.get("prompt", {}), sort_keys=True) for e in extras}
    if len(prompted) == 1 and extras:  # one prompt (and guidance) for the whole set: say which
        prompt = ", ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in sorted(extras[0].get("prompt", {}).items())
        )
        how += f"; prompt {prompt}; guidance {extras[0].get('guidance')}"
    md += ["## Sparse networks (B5)", "",
           f"Test accuracy at each sparsity: generated ({how}), one-shot "
           "global magnitude pruning without fine-tuning, IMP with rewinding (interpolated between its "
           "rounds' sparsities), random pruning; all from the same SGD members.", "",
           table(["sparsity", "generated", "magnitude", "IMP (interp.)", "random", "B5 met"], sparse_rows)
           if sparse_rows else "No sparse networks were generated.", "",
           "![accuracy vs sparsity](plots/sparsity.png)", ""]  # fmt: skip
    md += ["## Supermasks on unseen random inits (B6)", "",
           f"{len(masks)} masks at 50% sampled in one pass for frozen signed-constant inits no member "
           "was trained on; edge-popup trained on the very same inits; random masks on them too.", "",
           table(["set", "n", "test acc"], [[k, v.size, mean_std(v)] for k, v in mask_values.items()]), "",
           "![masks](plots/masks.png)", ""]  # fmt: skip
    cons = [[label, fmt(metrics([r for r in results if r["set"] == label]).get(f"frac_{k}_met"))]
            for label in ("generated/dense", "generated/sparse", "generated/masks") for k in ("sparsity",)]  # fmt: skip
    md += ["## Constraints", "", "Share of generated networks meeting their prompted sparsity exactly "
           "(- : not prompted).", "", table(["set", "sparsity met"], cons), ""]  # fmt: skip
    md += ["## Time to a network (B7)", "",
           table(["sampling s/net", "SGD s/net to the same accuracy", "target acc", "SGD members reaching it",
                  "speedup"],
                 [[m_time.get("sampling_s_per_net"), m_time.get("sgd_s_per_net"), m_time.get("target_acc"),
                   m_time.get("sgd_frac_reached"), m_time.get("speedup")]]),
           f"\nSGD: {sgd_seconds_per_step * 1e3:.2f} ms per step of one network, alone on this machine; "
           f"sampling: {n_dense} networks in one batch (denoiser steps, detokenizing and projection; "
           "not loading the model or writing the zoo).", ""]  # fmt: skip

    ss = theory.get("subset_sum") or []
    md += ["## Strong lottery tickets by subset sum", "",
           "Pensia et al. 2020: a random network twice as deep, pruned so that each target weight is a "
           "subset sum of n random products (subsets solved exactly).", "",
           table(["n", "hidden", "weight err max", "output err max", "target acc", "pruned acc"],
                 [[r["n"], r["hidden"], r.get("weight_err_max"), r.get("output_err_max"),
                   r.get("target_test_acc"), r.get("pruned_test_acc")] for r in ss]), "",
           "![subset sum](subset_sum/subset_sum.png)", ""]  # fmt: skip
    md += ["## Theory", "", "Random subset sum: probability that every target in [-1, 1] is ε-approximated, "
           "against n (continuous and quantized samples).", "", *theory_lines(theory), "![rss](theory/rss.png)", "",
           "Random number partitioning: probability of a perfect partition against κ = b/n.", "",
           *npp_lines(theory), "![npp](theory/npp.png)", ""]  # fmt: skip
    md += ["## Stages", "", table(["stage", "seconds"], [[k, v] for k, v in stage_seconds.items()]), ""]

    report = out / "report.md"
    with atomic_path(report) as tmp:
        tmp.write_text("\n".join(md))
    write_json(out / "results.json", {"benchmarks": bench, "targets": TARGETS, "evaluations": results,
                                       "stage_seconds": dict(stage_seconds), "preset": preset})  # fmt: skip
    if wandb != "disabled":
        log_wandb(out, bench, results, wandb)
    return report


def theory_lines(theory: Mapping[str, list[dict]]) -> list[str]:
    """Lueker's scaling as measured: n needed for P >= 0.9 against log2(1/eps), per distribution."""
    from mole.theory.rss import fit_scaling, n_needed

    rows = theory.get("rss") or []
    if not rows:
        return ["No random subset sum rows.", ""]
    needed = n_needed(rows, 0.9)
    out = []
    for dist in sorted({r["dist"] for r in needed}):
        fit = fit_scaling(needed, dist)
        if fit:
            out.append(f"- {dist}: n needed for P >= 0.9 = {fit['slope']:.2f} log2(1/ε) + {fit['intercept']:.1f} "
                       f"({fit['points']} ε reached)")  # fmt: skip
        else:
            out.append(f"- {dist}: too few ε reached to fit a line")
    return [*out, ""]


def npp_lines(theory: Mapping[str, list[dict]]) -> list[str]:
    """Where P(perfect partition) crosses 1/2, measured and as predicted, per n."""
    from mole.theory.npp import kappa_half

    rows = theory.get("npp") or []
    if not rows:
        return ["No number partitioning rows.", ""]
    body = [
        [n, kappa_half(rows, n), kappa_half(rows, n, "p_predicted")] for n in sorted({r["n"] for r in rows})
    ]
    return [table(["n", "κ where P = 1/2 (measured)", "(predicted)"], body), ""]


def log_wandb(out: Path, bench: Mapping[str, float], results: list[dict], mode: str) -> None:
    """The benchmark figures, the evaluation rows (a table) and every plot, through Lightning's WandbLogger."""
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(
        project="mole", name=f"report-{out.name}", save_dir=str(out), offline=mode == "offline"
    )
    logger.log_metrics({f"bench/{k}": v for k, v in bench.items() if not math.isnan(v)})
    logger.log_table("evaluations", columns=["set", "evaluator", "metric", "value"],
                     data=[[r["set"], r["evaluator"], r["metric"], r["value"]] for r in results])  # fmt: skip
    images = sorted((out / "plots").glob("*.png")) + [out / "theory" / "rss.png", out / "theory" / "npp.png",
                                                      out / "subset_sum" / "subset_sum.png"]  # fmt: skip
    images = [p for p in images if p.is_file()]
    if images:
        logger.log_image("plots", [str(p) for p in images], caption=[p.stem for p in images])
    logger.experiment.finish()
