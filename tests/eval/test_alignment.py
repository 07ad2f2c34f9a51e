"""prompt_alignment: MAE and Spearman between prompted and achieved levels."""

from __future__ import annotations

import math

import pytest

from mole.errors import ConfigError
from mole.eval import EvalSet, build_evaluator
from tests.eval.helpers import member, row

ACCS = [0.5, 0.7, 0.9]


def run(prompts: list[dict], **columns_each) -> dict:
    rows = [row(member(i), p, **{k: v[i] for k, v in columns_each.items()}) for i, p in enumerate(prompts)]
    return dict(build_evaluator("prompt_alignment")(EvalSet(rows)))


def test_prompts_met_exactly():
    out = run([{"test_acc": a} for a in ACCS], test_acc=ACCS)
    assert out == {"test_acc_mae": 0.0, "test_acc_spearman": 1.0}  # unprompted conditions: nothing


def test_reversed_order():
    out = run([{"test_acc": a} for a in ACCS], test_acc=ACCS[::-1])
    assert out["test_acc_spearman"] == pytest.approx(-1.0)
    assert out["test_acc_mae"] == pytest.approx((0.4 + 0.0 + 0.4) / 3)


def test_equal_prompts_leave_spearman_undefined():
    out = run([{"sparsity": 0.5, "bits": "ternary"}] * 3, sparsity=[0.5, 0.4, 0.6], bits=[2, 2, 2])
    assert out["sparsity_mae"] == pytest.approx(0.2 / 3)
    assert math.isnan(out["sparsity_spearman"])
    assert out["bits_mae"] == 0.0  # "ternary" is stored as 2 bits
    assert math.isnan(out["bits_spearman"])


def test_bad_conditions_option_names_the_field():
    with pytest.raises(ConfigError, match=r"^eval\.prompt_alignment\.conditions: .*valid"):
        build_evaluator("prompt_alignment", {"conditions": ["accuracy"]})
