"""novelty and diversity: cosine similarity after neuron-permutation alignment, and disagreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mole.errors import ConfigError
from mole.eval import EvalSet, build_evaluator
from mole.eval.diversity import pairwise_disagreement
from mole.nets import build_architecture
from tests.eval.helpers import ARCH, WEIGHTS, logits, member, only, permuted, row, task

REFERENCE = [row(member(i), member_id=f"ref{i}") for i in range(3)]


def novelty(members, reference=REFERENCE, **options) -> dict:
    return dict(build_evaluator("novelty", options)(EvalSet([row(m) for m in members], reference)))


@pytest.mark.parametrize("align", ["match", "canonical"])
def test_permuted_copy_of_a_training_member_is_not_novel(align):
    copy = permuted(member(1))
    assert not copy.equal(member(1))
    aligned = novelty([copy], align=align)
    assert aligned["nn_cosine_max"] == pytest.approx(1.0, abs=1e-12)
    assert aligned["frac_novel"] == 0.0
    raw = novelty([copy], align="none")
    assert raw["nn_cosine_max"] < 0.98  # without alignment the copy looks novel
    assert raw["frac_novel"] == 1.0


def test_orthogonal_members_have_cosine_zero():
    reference = [row(only(member(i), [WEIGHTS[0]])) for i in range(2)]
    out = novelty([only(member(5), [WEIGHTS[2], "layers.2.bias"])], reference)
    assert out["nn_cosine_mean"] == pytest.approx(0.0, abs=1e-12)
    assert out["frac_novel"] == 1.0


def test_members_compare_only_within_their_architecture():
    narrow = build_architecture("mlp", ARCH.input_shape, ARCH.num_classes, hidden=[4, 5])
    out = novelty([member(0), member(9, arch=narrow)])  # the narrow member has no reference: left out
    assert out["nn_cosine_max"] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ConfigError, match="no reference member shares an architecture"):
        novelty([member(9, arch=narrow)])
    with pytest.raises(ConfigError, match="needs EvalSet.reference"):
        novelty([member(0)], reference=None)


def diversity(members, data=None, **options) -> dict:
    return dict(build_evaluator("diversity", options)(EvalSet([row(m) for m in members], data=data)))


@pytest.mark.parametrize("align", ["match", "canonical"])
def test_diversity_of_copies_and_orthogonal_members(align):
    copies = diversity([member(0), permuted(member(0))], align=align)
    assert copies["pairwise_cosine_min"] == pytest.approx(1.0, abs=1e-12)
    assert diversity([member(0), permuted(member(0))], align="none")["pairwise_cosine_max"] < 0.98
    ortho = diversity([only(member(0), [WEIGHTS[0]]), only(member(1), [WEIGHTS[1]])], align=align)
    assert ortho["pairwise_cosine_mean"] == pytest.approx(0.0, abs=1e-12)


def test_pairwise_disagreement_counts_differing_predictions():
    preds = np.array([[0, 1, 2, 0], [0, 1, 1, 1], [0, 1, 2, 0]])
    assert pairwise_disagreement(preds).tolist() == [0.5, 0.0, 0.5]  # pairs (0,1), (0,2), (1,2)


def test_disagreement_on_the_task():
    data = task()
    a = member(0)
    only_class_0 = a.replace(
        params={**a.params, "layers.2.bias": a.params["layers.2.bias"] + torch.tensor([1e6, 0.0, 0.0])}
    )
    out = diversity([a, permuted(a), only_class_0], data=data)
    differ = (logits(a, data.x_test).argmax(1) != 0).double().mean().item()
    # pairs: (a, its copy) agree everywhere; both disagree with the constant classifier on `differ`
    assert out["pairwise_disagreement_mean"] == pytest.approx(2 * differ / 3)


def noisy(m, scale: float, seed: int = 7):
    g = torch.Generator().manual_seed(seed)
    return m.replace(
        params={n: t + scale * t.std() * torch.randn(t.shape, generator=g) for n, t in m.params.items()}
    )


def flat(m) -> np.ndarray:
    return torch.cat([t.flatten() for t in m.params.values()]).double().numpy()


def test_matched_pair_by_pair_reads_a_noisy_copy_as_its_member():
    copy = noisy(member(1), 0.1)
    a, b = flat(copy), flat(member(1))
    known = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))  # in its own order, before any permutation
    out = novelty([permuted(copy)], matched_k=3)
    assert out["nn_cosine_matched_max"] == pytest.approx(known, abs=1e-9)  # matching undoes the shift
    assert out["nn_cosine_matched_max"] >= out["nn_cosine_max"]
    assert novelty([permuted(copy)], matched_k=1)["nn_cosine_matched_max"] == pytest.approx(known, abs=1e-9)


def test_matched_k_zero_leaves_the_matched_figures_out():
    assert "nn_cosine_matched_median" not in novelty([member(0)], matched_k=0)
    with pytest.raises(ConfigError, match="eval.novelty.matched_k: must be an integer >= 0"):
        build_evaluator("novelty", {"matched_k": -1})
