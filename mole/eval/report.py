"""The report renderer: one function per section of report.md, each returning its Markdown lines.

A section function takes what it shows (rows, evaluator metrics, benchmark figures) and writes its
plot; it computes nothing a benchmark depends on (mole.eval.benchmarks does) and runs no evaluator
(mole.eval.run does). Where several zoos fill one section, each gets its own row, named by `name`.
Sections, in report order:
    header                 task, architecture, what was evaluated
    Benchmarks             B2-B8 of docs/design.md section 5 against their targets
    Zoo                    final test accuracy per variant and level of the SGD-trained zoo
    Generated vs SGD       B2: generated dense networks against the SGD members (and Temperature)
    Prompt alignment       B3: prompted against achieved accuracy (plot)
    Novelty and diversity  B4's weight side: nearest training member after weight matching
    Memorization test      B4: Zeng et al.'s test, accuracy against misprediction novelty (plot)
    Sparse networks        B5: accuracy against sparsity, generated vs magnitude, IMP, random (plot)
    Supermasks             B6: generated masks vs edge-popup, the construction and random masks (plot)
    Constraints            sparsity / bits / rank exactly met by the generated networks
    Time to a network      B7: sampling vs SGD to the same accuracy
    Subset-sum tickets     weight and output error of the Pensia et al. construction against n
    Theory                 random subset sum and number partitioning phase diagrams
    Stages                 wall seconds per pipeline stage (B8)
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mole.eval.base import Row, json_column, prompt_of
from mole.eval.benchmarks import DESCRIPTIONS, PRUNING, TARGETS, accs, by_level, met, random_mask_accs
from mole.eval.memorization import ALPHAS, NOISE_SCALES, MemorizationTest, frontier_at
from mole.eval.plots import plot_masks, plot_memorization, plot_prompts, plot_sparsity
from mole.theory.npp import kappa_half
from mole.theory.rss import fit_scaling, n_needed

Lines = list[str]


# ---------------------------------------------------------------------------- Markdown
def fmt(v: Any, digits: int = 3) -> str:
    """A table cell: floats to `digits` decimals, None and nan as "-"."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def mean_std(x: np.ndarray) -> str:
    return f"{x.mean():.4f} ± {x.std():.4f}" if x.size else "-"


def yes_no(flag: bool | None) -> str:
    return "-" if flag is None else "yes" if flag else "no"


def named(names: Sequence[str], rows: Sequence[list]) -> tuple[list[str], list[list]]:
    """A leading "zoo" column when a table holds several zoos (one zoo's table needs none)."""
    if len(set(names)) < 2:
        return [], [list(r) for r in rows]
    return ["zoo"], [[n, *r] for n, r in zip(names, rows)]


# ---------------------------------------------------------------------------- sections
def header_section(rows: Sequence[Row], preset: str = "", n_sgd: int | None = None,
                   seconds: float | None = None, lines: Sequence[str] = ()) -> Lines:  # fmt: skip
    """Title and one line: task and architecture (of rows[0]), SGD members, pipeline seconds.

    Args:
        rows: rows of the evaluated networks (the first names the task and architecture).
        preset: the quickstart preset ("" for none).
        n_sgd: SGD-trained dense members compared with (None: no reference zoo).
        seconds: the pipeline's wall seconds (None: not a pipeline run).
        lines: further lines (e.g. the zoos evaluated).
    """
    first = rows[0]
    parts = [f"Task `{first['task']}`, architecture `{first['architecture']}` {first['arch_options']}"]
    if n_sgd is not None:
        parts.append(f"{n_sgd} SGD-trained dense members")
    if seconds is not None:
        parts.append(f"whole pipeline {seconds:.0f} s")
    title = f"# mole report ({preset} preset)" if preset else "# mole report"
    return [title, "", "; ".join(parts) + ".", "", *([*lines, ""] if lines else [])]


def benchmarks_section(figures: Mapping[str, float]) -> Lines:
    """B2-B8 against TARGETS: a figure keyed "<key>/<zoo>" (several zoos in its section) gets a row
    "B<n> (<zoo>)"; benchmarks without a figure are left out (no section when none has one)."""
    rows = []
    for b, (key, op, target) in TARGETS.items():
        for k in (k for k in figures if k == key or k.startswith(f"{key}/")):
            label = b if k == key else f"{b} ({k.split('/', 1)[1]})"
            rows.append([label, DESCRIPTIONS[b], figures[k], f"{op} {target}", yes_no(met(b, figures[k]))])
    if not rows:
        return []
    return ["## Benchmarks", "", "Figures of this run against docs/design.md §5 (B1 is `scripts/bench_zoo.py`).",
            "", table(["#", "what", "value", "target", "met"], rows), ""]  # fmt: skip


def zoo_section(finals: Sequence[Row]) -> Lines:
    """Final test accuracy of the SGD-trained zoo per variant and level (variant_config)."""
    levels: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in finals:
        levels[(r["variant"], r["variant_config"])].append(r)
    return ["## Zoo", "", "Final test accuracy of the SGD-trained zoo, per variant and level.", "",
            table(["variant", "level", "members", "sparsity", "bits", "rank", "test acc"],
                  [[v, c, len(rs), float(np.mean([r["sparsity"] for r in rs])), rs[0]["bits"], rs[0]["rank"],
                    mean_std(accs(rs))] for (v, c), rs in sorted(levels.items())]), ""]  # fmt: skip


def accuracy_section(sets: Mapping[str, Sequence[Row]], sgd: Sequence[Row], note: str | None = None) -> Lines:
    """B2: test accuracy and loss of the generated dense zoos and of the SGD members.

    Args:
        sets: zoo name -> its generated rows.
        sgd: the SGD-trained members' final rows.
        note: what the generated networks are (default: a generic sentence).
    """
    note = (
        note
        or f"Generated dense networks prompted with test accuracies, against {len(sgd)} SGD-trained members."
    )

    def row(name: str, rows: Sequence[Row]) -> list:
        return [name, len(rows), mean_std(accs(rows)), float(np.mean([r["test_loss"] for r in rows]))]

    return ["## Generated vs SGD (B2)", "", note, "",
            table(["set", "n", "test acc", "test loss"],
                  [row("SGD members", sgd), *(row(n, rs) for n, rs in sets.items())]), ""]  # fmt: skip


def temperature_section(
    entries: Sequence[tuple[str | None, float, Mapping[str, float]]], note: str | None = None
) -> Lines:
    """Accuracy against novelty and diversity at each sampling temperature.

    Args:
        entries: (zoo name, or None where the temperature names the set; temperature; its accuracy /
            novelty / diversity metrics), shown by temperature, highest first.
        note: how the sets were sampled (default: a generic sentence).
    """
    note = note or ("Sampled from scaled initial noise: 1 samples the learned distribution, lower values "
                    "trade diversity for accuracy (0: one network per prompt).")  # fmt: skip
    entries = sorted(entries, key=lambda e: -e[1])
    names = [n for n, _, _ in entries]
    zoo, body = named(names if all(names) else [], [
        [t, m["test_acc_mean"], m["test_acc_max"], m["nn_cosine_median"], m["frac_novel"],
         m["pairwise_cosine_mean"], m.get("pairwise_disagreement_mean")] for _, t, m in entries])  # fmt: skip
    return ["### Temperature", "", note, "",
            table([*zoo, "temperature", "test acc mean", "test acc max", "nn cosine median", "frac novel",
                   "pairwise cosine mean", "pairwise disagreement"], body), ""]  # fmt: skip


def prompt_section(sets: Mapping[str, tuple[Sequence[Row], Mapping[str, Any]]],
                   zoo_range: tuple[float, float], plots: Path, what: str | None = None) -> Lines:  # fmt: skip
    """B3: prompted against achieved test accuracy; writes plots/prompts.png.

    Args:
        sets: zoo name -> (its rows, prompted with test_acc; its mole.eval.benchmarks.prompt_alignment).
        zoo_range: the accuracy range the diagonal of the plot spans.
        plots: the folder of the report's plots.
        what: how the networks were prompted (default: the number of prompts and their range).
    """
    lines, series = [], {}
    for name, (rows, b3) in sets.items():
        prompted = np.asarray([prompt_of(r)["test_acc"] for r in rows], dtype=float)
        series[name] = (prompted, accs(rows))
        how = what or (f"networks prompted at {len(set(prompted.tolist()))} test accuracies "
                       f"from {prompted.min():.3f} to {prompted.max():.3f}")  # fmt: skip
        line = (f"{len(rows)} {how}: Spearman {fmt(b3['spearman'])}, MAE {fmt(b3['mae'])}; mean achieved "
                f"accuracy rising with every prompt: {yes_no(b3['monotone'])}.")  # fmt: skip
        lines.append(line if len(sets) == 1 else f"- `{name}`: {line}")
    plot_prompts(series, zoo_range, plots / "prompts.png")
    return [
        "## Prompt alignment (B3)",
        "",
        *lines,
        "",
        f"![prompted vs achieved]({plots.name}/prompts.png)",
        "",
    ]


def novelty_section(sets: Mapping[str, Mapping[str, float]]) -> Lines:
    """B4's weight side: each zoo's novelty and diversity metrics (mole.eval.novelty, mole.eval.diversity)."""
    zoo, body = named(list(sets), [[m["nn_cosine_median"], m["nn_cosine_max"], m.get("nn_cosine_matched_median"),
                                    m["frac_novel"], m["pairwise_cosine_mean"], m.get("pairwise_disagreement_mean")]
                                   for m in sets.values()])  # fmt: skip
    return ["## Novelty and diversity (B4)", "",
            "Cosine similarity of each generated network to its nearest SGD member, both matched to one "
            "reference by weight matching (a permuted copy of a member scores 1); matched: each network "
            "weight-matched to each of its 4 nearest members pair by pair.", "",
            table([*zoo, "nn cosine median", "nn cosine max", "matched median", "frac novel (< 0.98)",
                   "pairwise cosine mean", "pairwise disagreement"], body), ""]  # fmt: skip


def memorization_record(t: MemorizationTest, parts: Mapping[str, bool]) -> dict[str, Any]:
    """One zoo's memorization test as results.json holds it (its "memorization" entry)."""
    return {"parts": dict(parts), "novelty": t.novelty, "novelty_sgd": t.novelty_sgd, "diversity": t.diversity,
            "diversity_sgd": t.diversity_sgd, "acc": t.acc, "acc_sgd": t.acc_sgd, "at_novelty": t.at_novelty,
            "frontier": t.frontier, "margin": t.margin, "interval": [t.margin_low, t.margin_high],
            "draws": t.draws, "confidence": t.confidence,
            "curves": {f: p.tolist() for f, p in t.curves.items()}}  # fmt: skip


def memorization_section(
    sets: Mapping[str, tuple[MemorizationTest, Mapping[str, bool]]], plots: Path
) -> Lines:
    """B4: Zeng et al.'s memorization test per dense zoo; writes plots/memorization.png.

    Args:
        sets: zoo name -> (its mole.eval.memorization.MemorizationTest, its
            mole.eval.benchmarks.memorization_parts). Every zoo shares the SGD members and baselines.
        plots: the folder of the report's plots.
    """
    first = next(iter(sets.values()))[0]
    pct = f"{first.confidence:.0%}"
    lead = ("Zeng et al. 2025: a network's novelty is its largest IoU between the test examples it gets "
            "wrong and those any final SGD member gets wrong (lower is more novel; each SGD member against "
            "the other members). Baselines made from the members alone: Gaussian noise at "
            f"{' / '.join(f'{x:g}' for x in NOISE_SCALES[1:])} × each tensor's std, and interpolations of "
            f"weight-matched pairs at α {' / '.join(f'{x:g}' for x in ALPHAS[1:])}; each level is one point "
            "(median max-IoU, mean accuracy) of its family's curve. The margin is the generated mean "
            "accuracy minus the better curve's at the generated median novelty; its interval is a "
            f"{pct} bootstrap over networks and test examples ({first.draws} draws).")  # fmt: skip
    zoo, body = named(list(sets), [
        [t.acc, t.novelty, t.diversity, t.at_novelty.get("noise"), t.at_novelty.get("interpolation"),
         t.margin, f"[{fmt(t.margin_low)}, {fmt(t.margin_high)}]",
         " / ".join(yes_no(v) for v in parts.values()), f"{sum(parts.values())}/{len(parts)}"]
        for t, parts in sets.values()])  # fmt: skip
    sgd_line = (f"SGD members: test accuracy {first.acc_sgd:.3f}, max-IoU median {fmt(first.novelty_sgd)} "
                f"(each against the others), pairwise IoU median {fmt(first.diversity_sgd)}.")  # fmt: skip
    nets = {(f"generated ({n})" if len(sets) > 1 else "generated"): (t.generated.novelty, t.generated.acc)
            for n, (t, _) in sets.items()}  # fmt: skip
    nets["SGD members"] = (first.sgd.novelty, first.sgd.acc)
    for family, levels in first.baselines.items():
        shown = [p for v, p in levels.items() if v > 0]  # level 0 is the members themselves
        nets[family] = tuple(np.concatenate([getattr(p, k) for p in shown]) for k in ("novelty", "acc"))
    grid = np.linspace(min(p[0, 0] for p in first.curves.values()), 1.0, 101) if first.curves else np.zeros(0)
    frontier = np.asarray([(x, frontier_at(first.curves, x)) for x in grid]).reshape(-1, 2)
    plot_memorization(nets, first.curves, frontier, plots / "memorization.png")
    return ["## Memorization test (B4)", "", lead, "", sgd_line, "",
            table([*zoo, "test acc", "max-IoU median", "pairwise IoU median", "noise at it", "interp. at it",
                   "margin", f"{pct} interval", "above / novel / diverse / accurate", "parts met"], body), "",
            f"![accuracy vs novelty]({plots.name}/memorization.png)", ""]  # fmt: skip


def how_sparse(rows: Sequence[Row]) -> str:
    """How a sparse zoo was made, from its rows' extra: projected or prompted, and its one prompt."""
    extras = [json_column(r.get("extra")) for r in rows]
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
    return how


def how_magnitude(pruning: Sequence[Row]) -> str:
    """The magnitude baseline in words, from its rows' variant_config (scope, fine-tuning epochs)."""
    configs = [json_column(r.get("variant_config")) for r in pruning if r["variant"] == "magnitude"]
    if not configs:
        return "no magnitude pruning"
    scopes = {c.get("scope") for c in configs} - {None}
    epochs = {c.get("finetune_epochs", 0) for c in configs}
    scope = f"{scopes.pop()} " if len(scopes) == 1 else ""
    tuned = " without fine-tuning" if epochs == {0} else " with fine-tuning" if 0 not in epochs else ""
    return f"one-shot {scope}magnitude pruning{tuned}"


def sparse_section(sets: Mapping[str, tuple[Sequence[Row], Sequence[Mapping]]], pruning: Sequence[Row],
                   plots: Path, source: str | None = None) -> Lines:  # fmt: skip
    """B5: accuracy per sparsity of each sparse zoo against the pruning baselines; writes plots/sparsity.png.

    Args:
        sets: zoo name -> (its rows, its mole.eval.benchmarks.sparse_levels).
        pruning: the baselines' rows (variants magnitude, imp, random; none: generated only).
        plots: the folder of the report's plots.
        source: whose members the baselines pruned, e.g. "the same SGD members" (None: not said).
    """
    hows = {name: how_sparse(rows) for name, (rows, _) in sets.items()}
    generated = f"generated ({next(iter(hows.values()))})" if len(sets) == 1 else "generated (below)"
    baselines = (f"{how_magnitude(pruning)}, IMP with rewinding (interpolated between its rounds' sparsities), "
                 f"random pruning{f'; all from {source}' if source else ''}" if pruning
                 else "no pruning baselines were given")  # fmt: skip
    lead = f"Test accuracy at each sparsity: {generated}, {baselines}."
    names, body = [], []
    for name, (_, levels) in sets.items():
        for x in levels:
            names.append(name)
            body.append([x["sparsity"], x["generated"], x["magnitude"], x["imp_interp"], x["random"],
                         yes_no(x["met"])])  # fmt: skip
    zoo, body = named(names, body)
    curves = {name: by_level(rows) for name, (rows, _) in sets.items()}
    curves.update({b: by_level([r for r in pruning if r["variant"] == b]) for b in PRUNING})
    plot_sparsity(curves, plots / "sparsity.png")
    return ["## Sparse networks (B5)", "", lead, "",
            *([f"- `{n}`: {h}" for n, h in hows.items()] + [""] if len(sets) > 1 else []),
            table([*zoo, "sparsity", "generated", "magnitude", "IMP (interp.)", "random", "B5 met"], body)
            if body else "No sparse networks were generated.", "",
            f"![accuracy vs sparsity]({plots.name}/sparsity.png)", ""]  # fmt: skip


def mask_section(sets: Mapping[str, tuple[Sequence[Row], ...]], plots: Path,
                 note: str | None = None) -> Lines:  # fmt: skip
    """B6: generated masks against edge-popup, the least-squares construction and random masks on the
    same inits; writes plots/masks.png.

    Args:
        sets: zoo name -> (its mask rows, the edge-popup rows on the same inits[, the lsq_supermask
            rows on them]).
        plots: the folder of the report's plots.
        note: how the masks and inits were made (default: a generic sentence).
    """
    levels = sorted(
        {float(prompt_of(r).get("sparsity", r["sparsity"])) for rows, *_ in sets.values() for r in rows}
    )
    pct = " / ".join(f"{s:.0%}" for s in levels)
    n = sum(len(rows) for rows, *_ in sets.values())
    paired = ("edge-popup trained on the same inits (paired by init seed); random masks on them too"
             if any(p for _, p, *_ in sets.values()) else "no edge-popup rows on these inits were given")  # fmt: skip
    note = note or f"{n} generated masks at {pct} over the frozen random inits stored with them; {paired}."
    values: dict[str, np.ndarray] = {}
    for name, (rows, popup, *built) in sets.items():
        tag = "" if len(sets) == 1 else f" ({name})"
        values[name] = accs(rows)
        if built and built[0]:  # the construction on these inits
            values[f"construction{tag}"] = accs(built[0])
        if popup:  # none: no edge-popup row on these inits
            values[f"edge-popup{tag}"] = accs(popup)
            values[f"random mask{tag}"] = random_mask_accs(popup)
    plot_masks(values, plots / "masks.png", f"Masks over the same unseen random inits ({pct})")
    return ["## Supermasks on unseen random inits (B6)", "", note, "",
            table(["set", "n", "test acc"], [[k, v.size, mean_std(v)] for k, v in values.items()]), "",
            f"![masks]({plots.name}/masks.png)", ""]  # fmt: skip


def constraints_section(sets: Mapping[str, Mapping[str, float]]) -> Lines:
    """Share of each generated set meeting its prompted constraints (mole.eval.constraints); a column
    for sparsity always, for bits and rank where some set prompted them.

    Args:
        sets: set label -> its metrics (frac_<constraint>_met where prompted).
    """
    keys = ["sparsity", *(k for k in ("bits", "rank") if any(f"frac_{k}_met" in m for m in sets.values()))]
    return ["## Constraints", "",
            f"Share of generated networks meeting their prompted {' / '.join(keys)} exactly (- : not prompted).",
            "", table(["set", *(f"{k} met" for k in keys)],
                      [[label, *(fmt(m.get(f"frac_{k}_met")) for k in keys)] for label, m in sets.items()]),
            ""]  # fmt: skip


def time_section(sets: Mapping[str, tuple[int, Mapping[str, float]]], sgd_seconds_per_step: float) -> Lines:
    """B7: seconds per network by sampling and by SGD to the same accuracy (mole.eval.timing).

    Args:
        sets: zoo name -> (networks sampled in one batch, its time_to_network metrics).
        sgd_seconds_per_step: one SGD step of one network, measured alone on this machine.
    """
    zoo, body = named(list(sets), [[m.get("sampling_s_per_net"), m.get("sgd_s_per_net"), m.get("target_acc"),
                                    m.get("sgd_frac_reached"), m.get("speedup")] for _, m in sets.values()])  # fmt: skip
    n = f"{next(iter(sets.values()))[0]} networks" if len(sets) == 1 else "each zoo's networks"
    return ["## Time to a network (B7)", "",
            table([*zoo, "sampling s/net", "SGD s/net to the same accuracy", "target acc",
                   "SGD members reaching it", "speedup"], body),
            f"\nSGD: {sgd_seconds_per_step * 1e3:.2f} ms per step of one network, alone on this machine; "
            f"sampling: {n} in one batch (denoiser steps, detokenizing and projection; "
            "not loading the model or writing the zoo).", ""]  # fmt: skip


def subset_sum_section(rows: Sequence[Mapping[str, Any]], image: str | None = None) -> Lines:
    """Strong lottery tickets by subset sum (mole.baselines.subset_sum rows); `image`: the plot's link."""
    return ["## Strong lottery tickets by subset sum", "",
            "Pensia et al. 2020: a random network twice as deep, pruned so that each target weight is a "
            "subset sum of n random products (subsets solved exactly).", "",
            table(["n", "hidden", "weight err max", "output err max", "target acc", "pruned acc"],
                  [[r["n"], r["hidden"], r.get("weight_err_max"), r.get("output_err_max"),
                    r.get("target_test_acc"), r.get("pruned_test_acc")] for r in rows]), "",
            *([f"![subset sum]({image})", ""] if image else [])]  # fmt: skip


def theory_section(
    rss: Sequence[dict], npp: Sequence[dict], images: Mapping[str, str] | None = None
) -> Lines:
    """Random subset sum (Lueker's scaling as measured) and number partitioning (where P = 1/2).

    Args:
        rss: mole.theory.rss rows (none: that part is left out).
        npp: mole.theory.npp rows (none: that part is left out).
        images: "rss" / "npp" -> the plot's link.
    """
    images = images or {}
    lines = ["## Theory", ""]
    if rss:
        lines += ["Random subset sum: probability that every target in [-1, 1] is ε-approximated, against n "
                  f"(continuous and quantized samples; {rss_method(list(rss))}).", "", *rss_lines(list(rss))]  # fmt: skip
        lines += [f"![rss]({images['rss']})", ""] if "rss" in images else []
    if npp:
        lines += ["Random number partitioning: probability of a perfect partition against κ = b/n.", "",
                  table(["n", "κ where P = 1/2 (measured)", "(predicted)"],
                        [[n, kappa_half(list(npp), n), kappa_half(list(npp), n, "p_predicted")]
                         for n in sorted({r["n"] for r in npp})]), ""]  # fmt: skip
        lines += [f"![npp]({images['npp']})", ""] if "npp" in images else []
    return lines


def rss_method(rows: list[dict]) -> str:
    """How the rows' coverage error was measured: exactly over every z, or on a grid of targets."""
    if rows[0].get("method", "grid") == "exact":  # rows written before the exact method have none: grid
        return "exact: the worst z over all of [-1, 1]"
    targets = rows[0].get("targets")
    return f"on a grid of {targets} evenly spaced targets" if targets else "on a grid of targets"


def rss_lines(rows: list[dict]) -> Lines:
    """Lueker's scaling as measured: n needed for P >= 0.9 against log2(1/eps), per distribution."""
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


def stages_section(stage_seconds: Mapping[str, float]) -> Lines:
    """Wall seconds per pipeline stage ("total" included)."""
    return ["## Stages", "", table(["stage", "seconds"], [[k, v] for k, v in stage_seconds.items()]), ""]
