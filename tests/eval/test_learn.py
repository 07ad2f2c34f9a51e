"""B9 figures: prompt following, SGD steps to a loss, distances to the start and the nearest member."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mole.data import TaskData
from mole.eval import learn
from mole.zoo.train import evaluate_stacked
from tests.eval.helpers import ARCH, member, permuted


def test_prompt_following_figures():
    perfect = learn.prompt_following([0.1, 0.2, 0.4], [0.1, 0.2, 0.4])
    assert (
        perfect["spearman"] == pytest.approx(1.0) and perfect["mae"] == 0 and perfect["rel_error_mean"] == 0
    )
    off = learn.prompt_following([0.1, 0.2, 0.4], [0.11, 0.18, 0.5])
    assert off["mae"] == pytest.approx((0.01 + 0.02 + 0.1) / 3)
    assert off["rel_error_mean"] == pytest.approx((0.1 + 0.1 + 0.25) / 3)
    assert off["rel_error_median"] == pytest.approx(0.1)
    assert learn.prompt_following([0.1, 0.2, 0.4], [0.3, 0.2, 0.1])["spearman"] == pytest.approx(-1.0)


def test_steps_to_reach_is_the_first_step_at_or_below_the_target():
    steps = np.array([0, 10, 20, 30])
    curve = np.array([[2.0, 2.0], [1.0, 1.9], [0.5, 1.8], [0.4, 1.7]])  # (S, K)
    got = learn.steps_to_reach(steps, curve, np.array([0.5, 1.0]))
    assert got[0] == 20 and math.isinf(got[1])
    assert learn.steps_to_reach(steps, curve, np.array([3.0, 2.0])).tolist() == [0, 0]


def test_sgd_curves_start_at_the_start_and_follow_the_plan():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(256, *ARCH.input_shape, generator=g), torch.randint(0, 3, (256,), generator=g)
    y = (x.flatten(1)[:, :3].argmax(1)).long()  # learnable labels
    data = TaskData("toy", x, y, x[:64], y[:64], x[:64], y[:64], 3)
    starts = [member(0), member(1)]
    rows = [
        {"lr": lr, "weight_decay": 0.0, "momentum": 0.9, "batch_size": 32, "optimizer": "sgd"}
        for lr in (0.05, 0.1, 0.2)
    ]
    plan = learn.median_plan(rows)
    assert (plan.lr, plan.batch_size, plan.optimizer) == (0.1, 32, "sgd")
    steps, curve = learn.sgd_curves(ARCH, starts, data, plan, max_steps=40, every=10)
    assert steps.tolist() == [0, 10, 20, 30, 40] and curve.shape == (5, 2)
    params = {n: torch.stack([m.params[n] for m in starts]) for n in starts[0].params}
    assert curve[0] == pytest.approx(
        evaluate_stacked(ARCH.forward_stacked, params, data)["test_loss"].numpy()
    )
    assert (curve[-1] < curve[0]).all()  # SGD lowers the loss
    for i, m in enumerate(starts):  # the starts themselves are left alone
        assert all(torch.equal(m.params[n], member(i).params[n]) for n in m.params)


def test_distances_align_training_members_to_the_start():
    start, other = member(0), member(1)
    bank = learn.aligned_bank([permuted(start), other], start)  # a permuted copy of the start is the same net
    d, k = learn.nearest(start, bank)
    assert k == 0 and d == pytest.approx(0.0, abs=1e-5)
    assert learn.distance(start, permuted(start)) > 1.0  # unaligned, the copy looks far
    assert learn.distance(start, start) == 0.0
