"""Zeng et al.'s memorization test: do generated nets beat copies of the training members at equal novelty?

Zeng, Yin, Xu & Liu 2025 ("Generative Modeling of Weights: Generalization or Memorization?") score a
net's novelty as its largest misprediction IoU with any training member (mole.eval.mispredictions) and
hold a generator against two baselines that only reuse the members: members plus Gaussian noise, and
interpolations of members. Each baseline family sweeps a level (noise scale, interpolation weight);
each level is one point (median max-IoU, mean accuracy), the family's curve runs through its points,
and the frontier is the best of the families at a given novelty. Generated nets pass when, at their
median novelty, their mean accuracy is above the frontier by more than test-set resampling noise.

The training members are the SGD members' final checkpoints, as in Zeng et al.'s per-model checks
(their G.pt evaluation takes each training run's last network).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mole.data import TaskData
from mole.eval.base import by_architecture, predict
from mole.eval.mispredictions import max_iou, pairwise_iou, wrong_sets
from mole.tokenizer import MemberTensors
from mole.tokenizer.canonical import match_order

NOISE_SCALES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)  # times each tensor's std in its member
ALPHAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)  # weight of the matched partner; 0.5 is the midpoint


# ---------------------------------------------------------------------------- the baselines
@dataclass
class Baselines:
    """Nets made from the training members alone: nets[i] is family[i] at level[i]."""

    nets: list[MemberTensors] = field(default_factory=list)
    family: list[str] = field(default_factory=list)
    level: list[float] = field(default_factory=list)

    def add(self, family: str, level: float, net: MemberTensors) -> None:
        self.nets.append(net)
        self.family.append(family)
        self.level.append(float(level))


def bare(m: MemberTensors) -> MemberTensors:
    """The member's effective params alone (masks, codes and factors dropped)."""
    return MemberTensors(m.architecture, m.arch_config, m.params)


def noisy_copies(members: Sequence[MemberTensors], scales: Sequence[float], seed: int = 0) -> Baselines:
    """Each member plus Gaussian noise, at each scale relative to each of its tensors' std.

    A member's noise is drawn once and scaled for every level, so its copies lie on one line and the
    levels differ only in how far along it (a smoother curve than fresh noise per level).

    Args:
        members: the training members.
        scales: noise std over tensor std (0 gives the member itself).
        seed: the noise's generator seed.
    """
    g = torch.Generator().manual_seed(seed)
    noise = [{n: t.float().std(correction=0) * torch.randn(t.shape, generator=g) for n, t in m.params.items()}
             for m in members]  # fmt: skip
    out = Baselines()
    for scale in scales:
        for m, eps in zip(members, noise):
            out.add(
                "noise", scale, bare(m).replace(params={n: t + scale * eps[n] for n, t in m.params.items()})
            )
    return out


def interpolations(members: Sequence[MemberTensors], alphas: Sequence[float], seed: int = 0) -> Baselines:
    """(1 - alpha) * member + alpha * partner, the partner weight-matched to the member first.

    Each member gets one partner of its architecture: the next along a random cycle through them, so
    every member is interpolated from once and towards once. Without matching, the midpoint of two
    members sits in neither's basin and is a weak baseline; matched, it is the one Zeng et al. use.

    Args:
        members: the training members.
        alphas: the partner's weights (0 gives the member itself; 0.5 the midpoint).
        seed: draws the cycle.
    """
    rng = np.random.default_rng(seed)
    out = Baselines()
    pairs = []
    for idx in by_architecture(members).values():
        if len(idx) < 2:
            continue
        cycle = [idx[i] for i in rng.permutation(len(idx))]
        pairs += [(a, b) for a, b in zip(cycle, cycle[1:] + cycle[:1])]
    for a, b in sorted(pairs):
        base = members[a]
        partner = match_order(bare(members[b]), base.params)[0]
        for alpha in alphas:
            params = {n: (1 - alpha) * t + alpha * partner.params[n] for n, t in base.params.items()}
            out.add("interpolation", alpha, bare(base).replace(params=params))
    return out


def baseline_nets(
    members: Sequence[MemberTensors],
    scales: Sequence[float] = NOISE_SCALES,
    alphas: Sequence[float] = ALPHAS,
    seed: int = 0,
) -> Baselines:
    """Both families: noisy copies at `scales`, then matched interpolations at `alphas`."""
    noise, mixed = noisy_copies(members, scales, seed), interpolations(members, alphas, seed)
    return Baselines(noise.nets + mixed.nets, noise.family + mixed.family, noise.level + mixed.level)


# ---------------------------------------------------------------------------- curves
def curve(novelty: np.ndarray, acc: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """(L, 2) one point per level, (median max-IoU, mean accuracy), sorted by max-IoU (most novel first)."""
    points = [(np.median(novelty[levels == v]), acc[levels == v].mean()) for v in np.unique(levels)]
    return np.asarray(sorted(points), dtype=np.float64).reshape(-1, 2)


def curve_at(points: np.ndarray, x: float) -> float:
    """A family's accuracy at novelty `x` (a max-IoU): the curve through its points, linear between
    them, raised to the best accuracy of any point at least as novel (a baseline more novel and more
    accurate dominates). Where `x` is more novel than every point, the family keeps its most novel
    point's accuracy: accuracy falls as novelty rises, so this grants the baseline more than it
    would reach there (nan only for a family without points)."""
    if points.size == 0 or math.isnan(x):
        return math.nan
    as_novel = points[points[:, 0] <= x, 1]
    return float(max(np.interp(x, points[:, 0], points[:, 1]), as_novel.max(initial=-np.inf)))


def frontier_at(curves: Mapping[str, np.ndarray], x: float) -> float:
    """The best family's accuracy at novelty `x` (nan with no family)."""
    values = [v for v in (curve_at(p, x) for p in curves.values()) if not math.isnan(v)]
    return max(values) if values else math.nan


# ---------------------------------------------------------------------------- the test
@dataclass
class Points:
    """Nets on the accuracy-against-novelty plane: max IoU with the training members (n,), accuracy (n,)."""

    novelty: np.ndarray
    acc: np.ndarray


@dataclass
class MemorizationTest:
    """What `memorization_test` measured; "sgd" figures score each member against the other members.

    Args:
        generated, sgd: their nets' points; baselines: family -> level -> points.
        curves: family -> its (L, 2) curve (see `curve`).
        novelty, novelty_sgd: median max-IoU; diversity, diversity_sgd: median pairwise IoU;
        acc, acc_sgd: mean test accuracy.
        at_novelty: family -> its accuracy at the generated median novelty; frontier: the best of them.
        margin: acc - frontier; margin_low, margin_high: its bootstrap interval over nets and test examples.
        draws: bootstrap draws; confidence: the interval's coverage.
    """

    generated: Points
    sgd: Points
    baselines: dict[str, dict[float, Points]]
    curves: dict[str, np.ndarray]
    novelty: float
    novelty_sgd: float
    diversity: float
    diversity_sgd: float
    acc: float
    acc_sgd: float
    at_novelty: dict[str, float]
    frontier: float
    margin: float
    margin_low: float
    margin_high: float
    draws: int
    confidence: float


def memorization_test(
    generated: Sequence[MemberTensors],
    members: Sequence[MemberTensors],
    data: TaskData,
    baselines: Baselines,
    draws: int = 400,
    confidence: float = 0.95,
    seed: int = 0,
) -> MemorizationTest:
    """Zeng et al.'s test of generated nets against the training members and the baselines (`judge`
    on the test examples each of them gets wrong).

    Args:
        generated: the generated nets.
        members: the training members (final SGD members); each is scored against the others.
        data: the task (its test split).
        baselines: nets made from `members` (`baseline_nets`).
        draws, confidence, seed: the bootstrap's (see `judge`).
    """
    labels = data.split("test")[1].cpu().numpy()
    wrong = wrong_sets(predict([*generated, *members, *baselines.nets], data).predictions, labels)
    n_gen, n_mem = len(generated), len(members)
    return judge(wrong[:n_gen], wrong[n_gen : n_gen + n_mem], wrong[n_gen + n_mem :], baselines.family,
                 baselines.level, draws, confidence, seed)  # fmt: skip


def judge(
    gen_wrong: np.ndarray,
    train: np.ndarray,
    base_wrong: np.ndarray,
    families: Sequence[str],
    levels: Sequence[float],
    draws: int = 400,
    confidence: float = 0.95,
    seed: int = 0,
) -> MemorizationTest:
    """The memorization test on sets of mispredicted test examples.

    The interval of the margin (generated mean accuracy minus the frontier's at their median novelty)
    comes from `draws` bootstrap resamples of the test examples (which change every IoU and accuracy),
    of the generated nets, and of the baseline nets within each level; the training members stay
    fixed.

    Args:
        gen_wrong: (N, n_test) bool, the examples each generated net gets wrong.
        train: (M, n_test) bool, the same for the training members.
        base_wrong: (B, n_test) bool, the same for the baseline nets, of families[i] at levels[i].
        families, levels: (B,) each baseline net's family ("noise", "interpolation") and level.
        draws: bootstrap resamples.
        confidence: the interval's coverage.
        seed: the resampling seed.
    """
    n_gen, n_mem, n_test = len(gen_wrong), len(train), train.shape[1]
    others = np.concatenate([gen_wrong, base_wrong])  # (N + B, n_test), generated first
    family, level = np.asarray(families, dtype=object), np.asarray(levels, dtype=np.float64)

    def measure(weights: np.ndarray | None, gen_idx: np.ndarray, base_idx: dict[str, np.ndarray]):
        """(generated points, baseline curves) under example weights and net resamples."""
        w = np.ones(n_test) if weights is None else weights
        iou, _ = max_iou(others, train, weights=w)
        acc = (~others).astype(np.float64) @ w / w.sum()
        gen = Points(iou[:n_gen][gen_idx], acc[:n_gen][gen_idx])
        curves = {f: curve(iou[n_gen:][i], acc[n_gen:][i], level[i]) for f, i in base_idx.items() if i.size}
        return gen, curves, iou, acc

    whole = {f: np.flatnonzero(family == f) for f in dict.fromkeys(family.tolist())}
    gen, curves, iou, acc = measure(None, np.arange(n_gen), whole)
    novelty = float(np.median(gen.novelty))
    at = {f: curve_at(p, novelty) for f, p in curves.items()}
    frontier = frontier_at(curves, novelty)
    margin = float(gen.acc.mean() - frontier)

    rng = np.random.default_rng(seed)
    groups = {f: [np.flatnonzero((family == f) & (level == v)) for v in np.unique(level[i])]
              for f, i in whole.items()}  # fmt: skip
    diffs = np.empty(draws)
    for d in range(draws):
        w = np.bincount(rng.integers(0, n_test, n_test), minlength=n_test).astype(np.float64)
        gen_idx = rng.integers(0, n_gen, n_gen)
        base_idx = {f: np.concatenate([rng.choice(g, g.size) for g in gs] or [np.zeros(0, int)])
                    for f, gs in groups.items()}  # fmt: skip
        g, c, _, _ = measure(w, gen_idx, base_idx)
        diffs[d] = g.acc.mean() - frontier_at(c, float(np.median(g.novelty)))
    tail = (1 - confidence) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail]) if draws else (math.nan, math.nan)

    sgd_iou, _ = max_iou(train, train, exclude=np.eye(n_mem, dtype=bool))
    sgd_acc = 1.0 - train.mean(axis=1)
    base_points = {
        f: {float(v): Points(iou[n_gen:][i[level[i] == v]], acc[n_gen:][i[level[i] == v]])
            for v in np.unique(level[i])}
        for f, i in whole.items() if i.size
    }  # fmt: skip
    gen_pairs, sgd_pairs = pairwise_iou(gen_wrong), pairwise_iou(train)
    return MemorizationTest(
        generated=gen,
        sgd=Points(sgd_iou, sgd_acc),
        baselines=base_points,
        curves=curves,
        novelty=novelty,
        novelty_sgd=float(np.nanmedian(sgd_iou)) if n_mem > 1 else math.nan,
        diversity=float(np.median(gen_pairs)) if gen_pairs.size else math.nan,
        diversity_sgd=float(np.median(sgd_pairs)) if sgd_pairs.size else math.nan,
        acc=float(gen.acc.mean()),
        acc_sgd=float(sgd_acc.mean()),
        at_novelty=at,
        frontier=frontier,
        margin=margin,
        margin_low=float(low),
        margin_high=float(high),
        draws=draws,
        confidence=confidence,
    )
