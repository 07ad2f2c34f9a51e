"""misprediction_iou: IoU of the sets of mispredicted test examples, on hand-made sets and members."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mole.errors import ConfigError
from mole.eval import EvalSet, build_evaluator
from mole.eval.mispredictions import iou_matrix, max_iou, pairwise_iou, wrong_sets
from tests.eval.helpers import member, permuted, row, task


def test_iou_of_hand_made_sets():
    a = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
    b = np.array([[1, 0, 1, 0], [0, 0, 0, 0]], dtype=bool)
    np.testing.assert_allclose(iou_matrix(a, b), [[1 / 3, 0.0], [0.0, 1.0]])  # two empty sets: alike
    # example 0 counted twice, example 3 not at all: {0, 0, 1} and {0, 0, 2} share 2 of 4
    assert iou_matrix(a[:1], b[:1], weights=np.array([2, 1, 1, 0]))[0, 0] == pytest.approx(0.5)
    assert wrong_sets(np.array([[0, 1, 2]]), np.array([0, 2, 2])).tolist() == [[False, True, False]]


def test_max_iou_leaves_out_what_it_is_told():
    train = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]], dtype=bool)
    best, nearest = max_iou(train, train)
    assert best.tolist() == [1.0, 1.0, 1.0] and nearest.tolist() == [0, 1, 2]
    best, nearest = max_iou(train, train, exclude=np.eye(3, dtype=bool))  # each against the others
    np.testing.assert_allclose(best, [1 / 3, 1 / 3, 1 / 3])
    assert nearest.tolist() == [1, 0, 1]  # ties go to the first member
    alone = max_iou(train[:1], train[:1], exclude=np.ones((1, 1), dtype=bool))
    assert np.isnan(alone[0][0]) and alone[1][0] == -1
    np.testing.assert_allclose(pairwise_iou(train), [1 / 3, 0.0, 1 / 3])  # pairs (0,1), (0,2), (1,2)


def constant(c: int, seed: int = 0):
    """A member that predicts class `c` on every input (a huge bias on its output)."""
    m = member(seed)
    bias = torch.zeros(3)
    bias[c] = 1e6
    return m.replace(params={**m.params, "layers.2.bias": m.params["layers.2.bias"] + bias})


def evaluate(members, reference, data, **options) -> dict:
    s = EvalSet(members, reference, data)
    return dict(build_evaluator("misprediction_iou", options)(s))


def test_constant_classifiers_have_known_overlaps():
    data = task(n_test=60)
    y = data.y_test.numpy()
    share = [(y == c).mean() for c in range(3)]
    consts = [row(constant(c), member_id=f"c{c}") for c in range(3)]
    # Constant classifiers c and d both err exactly where y is neither: IoU = share of the third class.
    out = evaluate(consts, consts, data, leave_one_out=True)
    against_others = [max(share[2], share[1]), max(share[2], share[0]), max(share[1], share[0])]
    assert out["max_iou_median"] == pytest.approx(np.median(against_others))
    assert out["max_iou_min"] == pytest.approx(min(against_others))
    assert out["pairwise_iou_median"] == pytest.approx(np.median([share[2], share[1], share[0]]))
    # Without leaving itself out, each member is its own nearest (IoU 1): all three are someone's nearest.
    out = evaluate(consts, consts, data)
    assert out["max_iou_max"] == out["max_iou_min"] == 1.0 and out["nearest_members"] == 1.0


def test_a_permuted_copy_behaves_as_its_member():
    data = task()
    reference = [row(member(i), member_id=f"m{i}") for i in range(3)]
    out = evaluate([row(permuted(member(1)), prompt={"test_acc": 0.5})], reference, data)
    assert out["max_iou_median"] == 1.0 and out["nearest_members"] == pytest.approx(1 / 3)
    assert np.isnan(out["pairwise_iou_median"])  # one member: no pair


def test_needs_data_and_someone_to_compare_with():
    data = task()
    one = [row(member(0), member_id="m0")]
    with pytest.raises(ConfigError, match="needs EvalSet.data"):
        evaluate(one, one, None)
    with pytest.raises(ConfigError, match="no reference member left"):
        evaluate(one, one, data, leave_one_out=True)
    with pytest.raises(ConfigError, match="eval.misprediction_iou.leave_one_out: must be true or false"):
        build_evaluator("misprediction_iou", {"leave_one_out": "yes"})
    assert "max_iou_median" not in evaluate(one, None, data)  # no reference: diversity only
