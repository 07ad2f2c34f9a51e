"""accuracy: stored and recomputed test metrics, grouped by a prompted level."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mole.errors import ConfigError
from mole.eval import EvalSet, build_evaluator
from tests.eval.helpers import logits, member, row, task


def test_statistics_of_stored_columns():
    accs, losses = [0.5, 0.7, 0.9], [3.0, 2.0, 1.0]
    rows = [row(member(i), test_acc=a, test_loss=loss) for i, (a, loss) in enumerate(zip(accs, losses))]
    out = dict(build_evaluator("accuracy")(EvalSet(rows)))
    assert out["test_acc_mean"] == pytest.approx(0.7)
    assert out["test_acc_std"] == pytest.approx(np.std(accs))  # population std
    assert (out["test_acc_min"], out["test_acc_max"], out["test_acc_median"]) == (0.5, 0.9, 0.7)
    assert out["test_loss_mean"] == pytest.approx(2.0)
    assert out["n"] == 3


def test_grouped_by_prompted_level_else_column():
    rows = [
        row(member(0), {"sparsity": 0.5}, test_acc=0.6, test_loss=1.0),
        row(member(1), {"sparsity": 0.5}, test_acc=0.8, test_loss=1.0),
        row(member(2), {"sparsity": 0.0}, test_acc=0.9, test_loss=1.0),
    ]
    out = dict(build_evaluator("accuracy", {"by": "sparsity"})(EvalSet(rows)))
    assert out["test_acc_mean@sparsity=0.5"] == pytest.approx(0.7)
    assert out["test_acc_mean@sparsity=0"] == pytest.approx(0.9)
    assert out["n@sparsity=0.5"] == 2
    by_variant = dict(build_evaluator("accuracy", {"by": "variant"})(EvalSet(rows)))
    assert by_variant["n@variant=generated"] == 3  # no "variant" in the prompts: the column


def test_recompute_on_the_task_ignores_stored_columns():
    data, members = task(), [member(0), member(1)]
    rows = [row(m, test_acc=0.0, test_loss=0.0) for m in members]
    out = dict(build_evaluator("accuracy", {"recompute": True})(EvalSet(rows, data=data)))
    accs = [(logits(m, data.x_test).argmax(1) == data.y_test).double().mean().item() for m in members]
    losses = [torch.nn.functional.cross_entropy(logits(m, data.x_test), data.y_test).item() for m in members]
    assert out["test_acc_mean"] == pytest.approx(np.mean(accs))
    assert out["test_loss_mean"] == pytest.approx(np.mean(losses), rel=1e-5)
    with pytest.raises(ConfigError, match="eval.accuracy: needs EvalSet.data"):
        list(build_evaluator("accuracy", {"recompute": True})(EvalSet(rows)))
