"""Zeng et al.'s memorization test: the baselines, their curves and frontier, and the verdict on hand-made sets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mole.eval import benchmarks as bench
from mole.eval.memorization import (
    baseline_nets,
    curve,
    curve_at,
    frontier_at,
    interpolations,
    judge,
    memorization_test,
    noisy_copies,
)
from mole.nets import build_architecture
from mole.tokenizer import MemberTensors
from tests.eval.helpers import member, permuted, task

WIDE = build_architecture(
    "mlp", (1, 4, 4), 3, hidden=[64]
)  # a 64x16 first weight: its noise std is measurable


def flat(m: MemberTensors) -> torch.Tensor:
    return torch.cat([t.flatten() for t in m.params.values()])


# ---------------------------------------------------------------------------- the baselines
def test_noise_is_scaled_by_each_tensors_std():
    m = member(0, arch=WIDE)
    m = m.replace(params={**m.params, "layers.0.bias": torch.full((64,), 0.5)})  # std 0: left as it is
    copies = noisy_copies([m], [0.0, 0.3], seed=0)
    assert copies.family == ["noise", "noise"] and copies.level == [0.0, 0.3]
    assert copies.nets[0].equal(m)  # scale 0 is the member itself
    noisy = copies.nets[1].params
    w = m.params["layers.0.weight"]
    assert (noisy["layers.0.weight"] - w).std().item() / w.std().item() == pytest.approx(0.3, rel=0.1)
    assert torch.equal(noisy["layers.0.bias"], m.params["layers.0.bias"])
    assert flat(noisy_copies([m], [0.3], seed=0).nets[0]).equal(flat(copies.nets[1]))  # seeded


def test_interpolation_matches_the_partner_first():
    """The midpoint of a member and a permuted copy of it is the member itself (once matched)."""
    a = member(0)
    mixed = interpolations([a, permuted(a)], [0.0, 0.5], seed=0)
    assert mixed.family == ["interpolation"] * 4 and mixed.level == [0.0, 0.5, 0.0, 0.5]
    assert mixed.nets[0].equal(a) and mixed.nets[2].equal(permuted(a))  # alpha 0: the member itself
    torch.testing.assert_close(flat(mixed.nets[1]), flat(a))
    torch.testing.assert_close(flat(mixed.nets[3]), flat(permuted(a)))
    unmatched = 0.5 * flat(a) + 0.5 * flat(permuted(a))
    assert not torch.allclose(unmatched, flat(a))  # without matching the midpoint is another net
    assert interpolations([a], [0.5]).nets == []  # no partner of its architecture


def test_baseline_nets_hold_both_families():
    b = baseline_nets([member(i) for i in range(3)], scales=[0.0, 0.1], alphas=[0.5])
    assert b.family == ["noise"] * 6 + ["interpolation"] * 3
    assert b.level == [0.0] * 3 + [0.1] * 3 + [0.5] * 3


# ---------------------------------------------------------------------------- curves
def test_curve_points_are_level_medians_and_means():
    novelty = np.array([0.2, 0.4, 0.9, 0.5, 0.6, 0.7])
    acc = np.array([0.5, 0.7, 0.9, 0.8, 0.6, 0.7])
    levels = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(curve(novelty, acc, levels), [[0.4, 0.7], [0.6, 0.7]])


def test_curve_at_interpolates_and_takes_a_dominating_point():
    points = np.array([[0.3, 0.5], [0.6, 0.8], [1.0, 0.9]])
    assert curve_at(points, 0.45) == pytest.approx(0.65)
    assert curve_at(points, 1.0) == pytest.approx(0.9)
    assert curve_at(points, 0.2) == pytest.approx(0.5)  # beyond its most novel point: that point's
    assert math.isnan(curve_at(np.zeros((0, 2)), 0.5))
    bent = np.array([[0.3, 0.9], [0.6, 0.7], [1.0, 0.95]])
    assert curve_at(bent, 0.6) == pytest.approx(0.9)  # a more novel point is more accurate
    curves = {"noise": points, "interpolation": np.array([[0.5, 0.6], [1.0, 0.9]])}
    assert frontier_at(curves, 0.45) == pytest.approx(0.65)
    assert frontier_at(curves, 0.9) == pytest.approx(0.875)  # interpolation's 0.84 is below noise's
    assert math.isnan(frontier_at({}, 0.5))


# ---------------------------------------------------------------------------- the verdict
def sets(examples: list[range], n_test: int = 100) -> np.ndarray:
    """(len(examples), n_test) bool: net i gets examples[i] wrong."""
    out = np.zeros((len(examples), n_test), dtype=bool)
    for i, e in enumerate(examples):
        out[i, list(e)] = True
    return out


# Four members, each wrong on its own 10 examples (accuracy 0.9). Noise level 1: the member's 10
# plus 20 new (IoU 1/3, accuracy 0.7); interpolation level 0.5: 5 of the member's plus 15 new
# (IoU 5/25, accuracy 0.8); level 0 of both: the members themselves (IoU 1, accuracy 0.9).
TRAIN = sets([range(10 * k, 10 * k + 10) for k in range(4)])
NOISE = sets([*(range(10 * k, 10 * k + 10) for k in range(4)),
              *([*range(10 * k, 10 * k + 10), *range(50, 70)] for k in range(4))])  # fmt: skip
MIXED = sets([*(range(10 * k, 10 * k + 10) for k in range(4)),
              *([*range(10 * k, 10 * k + 5), *range(70, 85)] for k in range(4))])  # fmt: skip
BASE = np.concatenate([NOISE, MIXED])
FAMILY = ["noise"] * 8 + ["interpolation"] * 8
LEVEL = [0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [0.5] * 4


def test_novel_accurate_nets_lie_above_the_frontier():
    # Each generated net: 5 of one member's examples plus 3 new ones (IoU 5/13, accuracy 0.92).
    gen = sets([[*range(10 * k, 10 * k + 5), *range(90, 93)] for k in range(4)])
    t = judge(gen, TRAIN, BASE, FAMILY, LEVEL, draws=200)
    x = 5 / 13
    noise = 0.7 + (x - 1 / 3) / (1 - 1 / 3) * 0.2
    mixed = 0.8 + (x - 0.2) / 0.8 * 0.1
    assert t.novelty == pytest.approx(x) and t.acc == pytest.approx(0.92)
    assert t.at_novelty == pytest.approx({"noise": noise, "interpolation": mixed})
    assert t.frontier == pytest.approx(mixed) and t.margin == pytest.approx(0.92 - mixed)
    assert 0 < t.margin_low <= t.margin <= t.margin_high
    assert t.novelty_sgd == 0.0 and t.acc_sgd == pytest.approx(0.9)  # the members share no error
    assert t.diversity == pytest.approx(3 / 13)  # two nets share the 3 new examples of 13
    parts = bench.memorization_parts(t)
    assert parts == {"above_frontier": True, "as_novel": False, "as_diverse": False, "as_accurate": True}
    assert bench.share_parts_met(parts) == 0.5


def test_copies_of_baselines_do_not_beat_the_frontier():
    gen = NOISE[4:]  # the noisy copies themselves: at IoU 1/3 the interpolations do better
    t = judge(gen, TRAIN, BASE, FAMILY, LEVEL, draws=200)
    assert t.margin == pytest.approx(0.7 - (0.8 + (1 / 3 - 0.2) / 0.8 * 0.1))
    assert t.margin_high < 0 and not bench.memorization_parts(t)["above_frontier"]


def test_nets_more_novel_than_every_baseline_face_its_most_novel_points():
    # Errors no member makes (IoU 0, beyond every curve): held against interpolation's 0.8 at IoU 0.2.
    better = judge(sets([range(98, 100)] * 4), TRAIN, BASE, FAMILY, LEVEL, draws=100)
    assert better.novelty == 0.0 and better.frontier == pytest.approx(0.8)
    assert better.margin == pytest.approx(0.18) and bench.memorization_parts(better)["above_frontier"]
    worse = judge(sets([[*range(40, 50), *range(85, 100)]] * 4), TRAIN, BASE, FAMILY, LEVEL, draws=100)
    assert worse.margin == pytest.approx(-0.05) and not bench.memorization_parts(worse)["above_frontier"]


def test_on_members_copies_of_the_members_pass_only_diversity_and_accuracy():
    data = task(n_test=80)
    members = [member(i) for i in range(4)]
    copies = [permuted(m) for m in members]  # the same four networks
    t = memorization_test(copies, members, data, baseline_nets(members, [0.0, 0.5], [0.0, 0.5]), draws=50)
    assert t.novelty == 1.0 and t.novelty_sgd < 1.0
    assert t.acc == pytest.approx(t.acc_sgd) and t.diversity == pytest.approx(t.diversity_sgd)
    assert t.margin <= 0 and t.margin_low <= t.margin <= t.margin_high
    assert bench.memorization_parts(t) == {
        "above_frontier": False,
        "as_novel": False,
        "as_diverse": True,
        "as_accurate": True,
    }
    assert sorted(t.baselines) == ["interpolation", "noise"] and set(t.baselines["noise"]) == {0.0, 0.5}
    assert (t.baselines["noise"][0.0].novelty == 1.0).all()  # level 0: the members themselves
