"""The benchmark figures B2-B8 (docs/design.md section 5): one small function each, over zoo rows.

The report (mole.eval.report), the quickstart and the bench scripts all compute a figure through the
function here, so a figure has one definition. TARGETS holds what each figure is held against.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mole.eval.alignment import PromptAlignment
from mole.eval.base import EvalSet, Row, json_column, prompt_of
from mole.eval.memorization import MemorizationTest

TARGETS = {  # docs/design.md section 5: (figure, comparison, target)
    "B2": ("acc_ratio", ">=", 0.97),
    "B3": ("spearman_prompt", ">=", 0.95),  # and MAE <= 0.03, monotone: the matrix table checks all three
    "B4": ("memorization_parts_met", ">=", 1.0),
    "B5": ("sparse_vs_baselines_met", ">=", 1.0),
    "B6": ("mask_ratio_edge_popup", ">=", 0.9),
    "B7": ("speedup_per_net", ">=", 10.0),
    "B8": ("quickstart_seconds", "<=", 600.0),
}
DESCRIPTIONS = {
    "B2": "generated dense nets: mean test accuracy / SGD members' mean (same prompts)",
    "B3": "Spearman, prompted vs achieved test accuracy over the zoo's range",
    "B4": "Zeng et al.'s memorization test: share of its 4 parts met (above the noise / interpolation "
    "frontier at equal novelty, 95% bootstrap; novelty, diversity, accuracy no worse than SGD's)",
    "B5": "generated sparse nets at 50/80/90% >= one-shot magnitude and >= IMP (share of levels)",
    "B6": "generated supermasks on unseen inits at 50%: accuracy / edge-popup's on the same inits",
    "B7": "seconds per net: SGD to the generated nets' accuracy / sampling (batch of 64)",
    "B8": "quickstart end to end, seconds (every stage but writing this report, a few seconds)",
}
PRUNING = ("magnitude", "imp", "random")  # the B5 baselines, by their rows' variant


def met(benchmark: str, value: float) -> bool:
    """Whether `value` meets benchmark `benchmark`'s target (a nan never does)."""
    _, op, target = TARGETS[benchmark]
    if math.isnan(value):
        return False
    return value >= target if op == ">=" else value <= target


def accs(rows: Sequence[Mapping]) -> np.ndarray:
    """(N,) the rows' stored test accuracies."""
    return np.asarray([r["test_acc"] for r in rows], dtype=float)


# ---------------------------------------------------------------------------- B2
def acc_ratio(generated: Sequence[Row], sgd: Sequence[Row]) -> float:
    """B2: mean test accuracy of the generated dense nets / the SGD members' mean.

    Args:
        generated: the generated rows (in the quickstart, one per SGD member, prompted with its accuracy).
        sgd: the SGD-trained members' final rows.
    """
    return float(accs(generated).mean() / accs(sgd).mean())


# ---------------------------------------------------------------------------- B3
def prompt_alignment(generated: Sequence[Row]) -> dict[str, Any]:
    """B3: how the achieved test accuracy follows the prompted one.

    Args:
        generated: rows prompted with test_acc (extra["prompt"]).

    Returns:
        spearman and mae (the prompt_alignment evaluator's test_acc_spearman and test_acc_mae: nan
        when undefined), and monotone: whether each distinct prompt's mean achieved accuracy is above
        the next lower prompt's (None with fewer than two distinct prompts).
    """
    rows = list(generated)
    m = dict(PromptAlignment(conditions=["test_acc"])(EvalSet(rows)))
    by_prompt: dict[float, list[float]] = defaultdict(list)
    for r in rows:
        want = prompt_of(r).get("test_acc")
        if want is not None and r.get("test_acc") is not None:
            by_prompt[float(want)].append(float(r["test_acc"]))
    means = [float(np.mean(by_prompt[p])) for p in sorted(by_prompt)]
    return {
        "spearman": m.get("test_acc_spearman", math.nan),
        "mae": m.get("test_acc_mae", math.nan),
        "monotone": bool(np.all(np.diff(means) > 0)) if len(means) > 1 else None,
    }


# ---------------------------------------------------------------------------- B4
def memorization_parts(t: MemorizationTest) -> dict[str, bool]:
    """B4's four parts (Zeng et al. 2025; mole.eval.memorization), each met or not:

    above_frontier: the bootstrap interval of (generated accuracy - the noise / interpolation
        frontier's at their median max-IoU) lies above 0 (a nan interval, no baseline as novel, fails);
    as_novel: generated median max-IoU with the members <= the SGD members' with each other;
    as_diverse: generated median pairwise misprediction IoU <= the SGD members';
    as_accurate: generated mean test accuracy >= the SGD members'.
    """
    return {
        "above_frontier": bool(t.margin_low > 0),
        "as_novel": bool(t.novelty <= t.novelty_sgd),
        "as_diverse": bool(t.diversity <= t.diversity_sgd),
        "as_accurate": bool(t.acc >= t.acc_sgd),
    }


def share_parts_met(parts: Mapping[str, bool]) -> float:
    """B4: the share of the memorization test's parts met (1.0 only when all four are)."""
    return float(np.mean(list(parts.values()))) if parts else math.nan


def share_novel(frac_novel: float, ratio: float) -> float:
    """The weight-space novelty figure B4 once was: the novelty evaluator's frac_novel (nearest-member
    cosine < 0.98 after weight matching), counted only when the same nets meet B2 (`ratio`, their
    acc_ratio), since copies of noise are novel too."""
    return frac_novel if ratio >= TARGETS["B2"][2] else 0.0


# ---------------------------------------------------------------------------- B5
def level_of(row: Mapping) -> float:
    """The sparsity a row was asked for (its prompt) or, failing that, has."""
    return float(prompt_of(row).get("sparsity", row["sparsity"]))


def by_level(rows: Sequence[Mapping], key=level_of) -> dict[float, np.ndarray]:
    """Test accuracies grouped by level (rounded to 4 decimals), levels ascending."""
    out: dict[float, list[float]] = defaultdict(list)
    for r in rows:
        out[round(key(r), 4)].append(r["test_acc"])
    return {k: np.asarray(v) for k, v in sorted(out.items())}


def sparsity_curves(
    sparse: Sequence[Mapping], pruning: Sequence[Mapping], name: str = "generated"
) -> dict[str, dict[float, np.ndarray]]:
    """Test accuracies by sparsity: the generated rows under `name` and each pruning baseline
    (magnitude, imp, random rows), all by the level they were asked for (`level_of`; IMP's rounds
    ask for none: its achieved sparsity). Both sides remove round(s * n) weights, which is not
    s * n on a net like the digits CNN (2874 of 3592 weights at 0.8): keyed by the achieved
    sparsity, its magnitude rows would sit at 0.8001, beside the generated nets' 0.8."""
    return {
        name: by_level(sparse),
        **{b: by_level([r for r in pruning if r["variant"] == b]) for b in PRUNING},
    }


def sparse_levels(curves: Mapping[str, dict[float, np.ndarray]], name: str = "generated") -> list[dict]:
    """B5 per generated level: mean accuracies of generated, magnitude and random at that level, IMP
    interpolated between its rounds' sparsities; met when generated >= magnitude and >= IMP (DESIGN's
    B5: IMP itself, not a share of it)."""
    imp_levels = curves["imp"]
    out = []
    for s, g in curves[name].items():
        mag, rnd = curves["magnitude"].get(s), curves["random"].get(s)
        imp = (
            float(np.interp(s, list(imp_levels), [v.mean() for v in imp_levels.values()]))
            if imp_levels
            else math.nan
        )
        ok = mag is not None and g.mean() >= mag.mean() and not math.isnan(imp) and g.mean() >= imp
        out.append({"sparsity": s, "generated": float(g.mean()),
                    "magnitude": math.nan if mag is None else float(mag.mean()), "imp_interp": imp,
                    "random": math.nan if rnd is None else float(rnd.mean()), "met": bool(ok)})  # fmt: skip
    return out


def share_levels_met(levels: Sequence[Mapping]) -> float:
    """B5: the share of generated levels that meet it (`sparse_levels`); nan with no level."""
    flags = [x["met"] for x in levels]
    return float(np.mean(flags)) if flags else math.nan


# ---------------------------------------------------------------------------- B6
def init_seed(row: Mapping) -> int | None:
    """The seed of the frozen init a mask row was given or drawn (extra["init_seed"]), else None."""
    seed = json_column(row.get("extra")).get("init_seed")
    return None if seed is None else int(seed)


def same_inits(masks: Sequence[Row], edge_popup: Sequence[Row]) -> list[Row]:
    """The edge-popup rows trained on the inits of `masks` (paired by init seed), in their order."""
    seeds = {s for s in map(init_seed, masks) if s is not None}
    return [r for r in edge_popup if init_seed(r) in seeds]


def mask_ratio(masks: Sequence[Row], edge_popup: Sequence[Row]) -> float:
    """B6: mean test accuracy of the generated masks / edge-popup's on the same inits (nan without any).

    Args:
        masks: generated mask rows (frozen inits with init_seed in extra).
        edge_popup: edge-popup rows; only those on the masks' inits count (`same_inits`).
    """
    paired = same_inits(masks, edge_popup)
    return float(accs(masks).mean() / accs(paired).mean()) if paired else math.nan


def mask_gain(masks: Sequence[Row], construction: Sequence[Row]) -> float:
    """B6's second target: mean test accuracy of the masks minus the least-squares construction's on the
    same inits, in points (x 100; nan without any pair).

    Args:
        masks: generated mask rows (frozen inits with init_seed in extra).
        construction: lsq_supermask rows; only those on the masks' inits count (`same_inits`).
    """
    paired = same_inits(masks, construction)
    return float(100 * (accs(masks).mean() - accs(paired).mean())) if paired else math.nan


def random_mask_accs(edge_popup: Sequence[Row]) -> np.ndarray:
    """(n,) test accuracy of the random top-k mask on each edge-popup row's init (the floor)."""
    values = np.asarray(
        [json_column(r.get("extra")).get("random_mask_test_acc", math.nan) for r in edge_popup], dtype=float
    )
    return values[~np.isnan(values)]


# ---------------------------------------------------------------------------- B7, B8
def speedup_per_net(time_metrics: Mapping[str, float]) -> float:
    """B7: seconds per net of SGD to the generated nets' accuracy / of sampling: the time_to_network
    evaluator's `speedup` (mole.eval.timing.TimeToNetwork), nan when it has none."""
    return float(time_metrics.get("speedup", math.nan))


def pipeline_seconds(stage_seconds: Mapping[str, float]) -> float:
    """B8: the pipeline's wall seconds end to end (its stages' "total"), nan when not recorded."""
    return float(stage_seconds.get("total", math.nan))
