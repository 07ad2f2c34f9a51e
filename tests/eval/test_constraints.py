"""constraints: exact sparsity counts, bit grids and ranks, checked against members the projection makes."""

from __future__ import annotations

import pytest
import torch

from mole.diffusion.project import project_members
from mole.eval import EvalSet, build_evaluator
from tests.eval.helpers import ARCH, WEIGHTS, member, row

N_WEIGHTS = sum(ARCH.param_shapes()[w][0] * ARCH.param_shapes()[w][1] for w in WEIGHTS)  # 141


def constraints(members, prompts) -> dict:
    return dict(build_evaluator("constraints")(EvalSet([row(m, p) for m, p in zip(members, prompts)])))


def projected(**levels):
    return project_members([member(0), member(1)], **levels)


def test_projected_members_meet_their_prompts():
    for levels in [
        {"sparsity": 0.5},
        {"sparsity": 0.5, "scope": "layerwise"},  # 48 + 15 + 8 = 71 removed, not round(70.5) = 70
        {"bits": 4},
        {"bits": "ternary"},
        {"sparsity": 0.3, "bits": 8},
        {"rank": 2},
    ]:
        prompt = {k: v for k, v in levels.items() if k != "scope"}
        out = constraints(projected(**levels), [prompt] * 2)
        assert out == {f"frac_{k}_met": 1.0 for k in prompt}, levels


def test_one_weight_too_few_removed():
    good, bad = projected(sparsity=0.5)
    assert (~bad.mask[WEIGHTS[0]]).sum() + (~bad.mask[WEIGHTS[1]]).sum() + (
        ~bad.mask[WEIGHTS[2]]
    ).sum() == round(0.5 * N_WEIGHTS)
    i = (~bad.mask[WEIGHTS[0]]).flatten().nonzero()[0, 0]
    mask, params = bad.mask[WEIGHTS[0]].clone(), bad.params[WEIGHTS[0]].clone()
    mask.view(-1)[i], params.view(-1)[i] = True, 0.25  # one removed weight revived
    bad = bad.replace(mask={**bad.mask, WEIGHTS[0]: mask}, params={**bad.params, WEIGHTS[0]: params})
    assert constraints([good, bad], [{"sparsity": 0.5}] * 2) == {"frac_sparsity_met": 0.5}


def test_a_removed_weight_must_be_zero():
    m = projected(sparsity=0.5)[0]
    params = m.params[WEIGHTS[1]].clone()
    params[~m.mask[WEIGHTS[1]]] = 1.0
    m = m.replace(params={**m.params, WEIGHTS[1]: params})
    assert constraints([m], [{"sparsity": 0.5}]) == {"frac_sparsity_met": 0.0}


def test_codes_outside_the_grid_or_params_off_the_grid():
    outside, off = projected(bits=4)
    codes = outside.codes[WEIGHTS[0]].clone()
    codes[0, 0] = 8  # 4 bits: codes in [-7, 7]
    params = outside.params[WEIGHTS[0]].clone()
    params[0, 0] = 8 * outside.scales[WEIGHTS[0]][0]  # consistent with the code, still off the grid
    outside = outside.replace(
        codes={**outside.codes, WEIGHTS[0]: codes}, params={**outside.params, WEIGHTS[0]: params}
    )
    params = off.params[WEIGHTS[2]].clone()
    params[1, 1] = torch.nextafter(params[1, 1], torch.tensor(1e9))  # one ulp away from code * scale
    off = off.replace(params={**off.params, WEIGHTS[2]: params})
    assert constraints([outside, off], [{"bits": 4}] * 2) == {"frac_bits_met": 0.0}
    assert constraints(projected(bits=4), [{"bits": 2}] * 2) == {"frac_bits_met": 0.0}


def test_rank_above_the_prompt():
    assert constraints(projected(rank=3), [{"rank": 2}] * 2) == {"frac_rank_met": 0.0}
    assert constraints(projected(rank=2), [{"rank": 3}] * 2) == {"frac_rank_met": 1.0}  # <= is met
    assert constraints([member(0)], [{"rank": 2}]) == {"frac_rank_met": 0.0}  # dense: full rank


def test_only_prompted_constraints_are_reported():
    assert constraints([member(0)], [{"test_acc": 0.9, "sparsity": 0.0, "bits": 32, "rank": 0}]) == {}
    assert set(constraints(projected(sparsity=0.5), [{"sparsity": 0.5}, {"bits": 32}])) == {
        "frac_sparsity_met"
    }
    out = constraints(projected(sparsity=0.5), [{"sparsity": 0.5}, {"test_acc": 0.5}])
    assert out == {"frac_sparsity_met": pytest.approx(1.0)}  # over the members that prompted it
