"""Projection onto exact constraints: sparsity counts, bit grids, ranks, level checks, per-member levels."""

from __future__ import annotations

import pytest
import torch

from mole.diffusion.project import check_levels, factor_shapes, project, project_members, stack
from mole.errors import ConfigError
from mole.nets import build_architecture
from mole.tokenizer import MemberTensors
from mole.zoo.quant import dequantize_params, qmax

ARCH = build_architecture("mlp", (1, 4, 4), 3, hidden=[7, 5])  # weights 7x16, 5x7, 3x5
CNN = build_architecture("cnn", (1, 4, 4), 3, channels=[2], hidden=[4])


def params(arch=ARCH, k: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(k, *s, generator=g) for n, s in arch.param_shapes().items()}  # (K, ...)


def removed(mask: torch.Tensor) -> torch.Tensor:
    return (~mask).sum(-1)  # (K,)


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_global_sparsity_removes_exactly_round_s_n_smallest(sparsity):
    p = params()
    out = project(ARCH, p, sparsity=sparsity)
    n = sum(p[w][0].numel() for w in ARCH.weight_names())
    assert removed(out.mask).tolist() == [round(sparsity * n)] * 3  # biases are never removed
    flat_w = torch.cat([p[w].flatten(1) for w in ARCH.weight_names()], 1).abs()
    flat_out = torch.cat([out.params[w].flatten(1) for w in ARCH.weight_names()], 1)
    for k in range(3):  # every removed weight is no larger than every kept one
        gone = flat_out[k] == 0
        assert flat_w[k][gone].max() <= flat_w[k][~gone].min()
    assert torch.equal(out.params["layers.0.bias"], p["layers.0.bias"])
    assert out.sparsity.tolist() == pytest.approx([round(sparsity * n) / n] * 3)


def test_layerwise_sparsity_with_scores_masks_the_init():
    init, scores = params(seed=1), params(seed=2)
    out = project(ARCH, params(), sparsity=0.5, scope="layerwise", scores=scores, init=init)
    member = out.members(ARCH)[1]
    for w in ARCH.weight_names():
        m = member.mask[w]
        assert (~m).sum().item() == round(0.5 * m.numel())
        s = scores[w][1]
        assert s[~m].max() <= s[m].min()  # the highest scores (logits) are kept
        assert torch.equal(member.params[w], init[w][1] * m)
        assert torch.equal(member.init_params[w], init[w][1])


@pytest.mark.parametrize("bits", [8, 4, 2, "ternary"])
@pytest.mark.parametrize("sparsity", [None, 0.5])
def test_bit_grid_is_exact(bits, sparsity):
    p = params()
    out = project(ARCH, p, sparsity=sparsity, bits=bits)
    assert out.bits == (2 if bits == "ternary" else bits)
    q = 1 if bits == "ternary" else qmax(bits)
    assert out.codes.abs().max() <= q and out.codes.dtype == torch.int8
    back = dequantize_params(ARCH, out.codes, out.scales, out.params)
    for w in ARCH.weight_names():  # code * scale == params, bitwise
        assert torch.equal(back[w].view(torch.int32), out.params[w].contiguous().view(torch.int32))
    if sparsity:  # pruned before quantizing: removed weights have code 0, sparsity stays exact
        n = sum(p[w][0].numel() for w in ARCH.weight_names())
        assert removed(out.mask).tolist() == [round(0.5 * n)] * 3
        flat = torch.cat([out.params[w].flatten(1) for w in ARCH.weight_names()], 1)
        assert ((flat != 0).sum(1) <= n - round(0.5 * n)).all()
    for m in out.members(ARCH):
        m.validate()


@pytest.mark.parametrize("arch", [ARCH, CNN], ids=["mlp", "cnn"])
def test_rank_projection(arch):
    p = params(arch)
    out = project(arch, p, rank=2)
    assert out.rank == 2 and out.factors.shape[0] == 3
    for w in arch.weight_names():
        if p[w].dim() == 3:  # linear (K, out, in): rank <= 2 numerically
            assert (torch.linalg.matrix_rank(out.params[w].double(), rtol=1e-5) <= 2).all()
        else:  # conv kernels stay whole
            assert torch.equal(out.params[w], p[w])
    member = out.members(arch)[0]
    first = next(w for w in arch.weight_names() if p[w].dim() == 3)  # the first linear layer
    u, v = member.factors[f"{first}.U"], member.factors[f"{first}.V"]
    assert torch.allclose(u @ v, member.params[first], atol=1e-5)


@pytest.mark.parametrize("arch", [ARCH, CNN], ids=["mlp", "cnn"])
def test_rank_met_from_given_factors(arch):
    """Generated factors of `factor_shapes` make every linear weight U V (the biases as given);
    the truncated SVD's own factors give the truncated SVD back; a wrong shape names the field."""
    p = params(arch)
    svd = project(arch, p, rank=2)
    own = svd.members(arch)
    assert [[n, list(d)] for n, d in own[0].factor_shapes()] == factor_shapes(arch, 2)
    factors = {n: torch.stack([m.factors[n] for m in own]) for n, _ in factor_shapes(arch, 2)}
    again = project(arch, p, rank=2, factors=factors)
    for n in p:
        torch.testing.assert_close(again.params[n], svd.params[n])
    g = torch.Generator().manual_seed(1)
    drawn = {n: torch.randn(f.shape, generator=g) for n, f in factors.items()}
    out = project(arch, p, rank=2, factors=drawn)
    for n, _ in factor_shapes(arch, 2):
        w = n.rsplit(".", 1)[0]
        if n.endswith(".U"):
            torch.testing.assert_close(out.params[w], drawn[n] @ drawn[f"{w}.V"])
    assert all(torch.equal(out.params[n], p[n]) for n in p if n.endswith("bias"))
    bad = {**drawn, factor_shapes(arch, 2)[0][0]: torch.randn(3, 1, 1)}
    with pytest.raises(ConfigError, match=r"^factors: .*\.U should be \[\d+, 2\] at rank 2, got \[1, 1\]"):
        project(arch, p, rank=2, factors=bad)


def test_level_checks_name_the_field():
    cases = [
        (dict(sparsity=1.0), "conditions.sparsity: must be in [0, 1)"),
        (dict(bits=5), "conditions.bits: unsupported bit-width 5; valid: 8, 4, 2, ternary, 32"),
        (dict(bits="int4"), "conditions.bits: unsupported bit-width 'int4'"),
        (dict(rank=2.5), "conditions.rank: must be a non-negative integer"),
        (dict(rank=2, sparsity=0.5), "conditions.rank: cannot be combined with sparsity or bits"),
        (dict(rank=9), "conditions.rank: 9 exceeds the limit 7 of layers.0.weight"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError) as e:
            check_levels(ARCH, **kwargs)
        assert str(e.value).startswith(message), str(e.value)
    assert check_levels(ARCH) == (0.0, 32, 0) and check_levels(ARCH, 0.5, 4.0, None) == (0.5, 4, 0)


def test_project_members_per_member_levels_keep_order_and_extra():
    p = params(k=4)
    members = [
        MemberTensors(ARCH.name, ARCH.config(), {n: t[i] for n, t in p.items()}, extra={"i": i})
        for i in range(4)
    ]
    out = project_members(members, sparsity=[0.5, None, 0.5, None], bits=[None, 4, None, 32])
    assert [m.extra["i"] for m in out] == [0, 1, 2, 3]
    assert [m.present() for m in out] == [["mask"], ["codes"], ["mask"], []]
    assert torch.equal(stack(out[3:])[1]["layers.1.weight"], p["layers.1.weight"][3:])  # float: untouched
    with pytest.raises(ConfigError, match="^projection: 2 levels for 4 members"):
        project_members(members, sparsity=[0.5, 0.5])
