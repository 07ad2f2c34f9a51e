"""Canonical neuron order: same function, invertible, one representative per permutation class."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mole.errors import ConfigError
from mole.tokenizer import MemberTensors, apply_permutation, build_tokenizer, canonical_order, invert
from mole.tokenizer.canonical import hidden_links, match_order, match_reference
from mole.zoo import store
from tests.tokenizer.helpers import KINDS, architectures, random_member, reconstruct, tiny_zoo

SETTINGS = settings(max_examples=30, deadline=None)


def outputs(member, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the plain module and of the stacked forward (K = 1)."""
    arch = member.arch
    with torch.no_grad():
        plain = arch.to_module(member.params)(x)
        stacked = arch.forward_stacked({n: t[None] for n, t in member.params.items()}, x)[0]
    return plain, stacked


def same_outputs(m, other, x: torch.Tensor) -> bool:
    """Equal outputs up to float32 rounding. Permuted units sum in another order, and random members'
    logits reach ~1e3 while some entries cancel to ~1: the tolerance scales with the largest output."""
    return all(
        torch.allclose(a, b, atol=1e-5 * float(a.abs().max().clamp(min=1)), rtol=1e-5)
        for a, b in zip(outputs(m, x), outputs(other, x))
    )


def tied(member) -> bool:
    """Whether two hidden neurons of a layer have the same incoming weights."""
    return any(
        len(torch.unique(member.params[n].flatten(1), dim=0)) < member.params[n].shape[0]
        for n in member.arch.weight_names()[:-1]
    )


def random_perms(member, seed: int) -> dict[str, list[int]]:
    g = torch.Generator().manual_seed(seed)
    return {
        w: torch.randperm(member.params[w].shape[0], generator=g).tolist()
        for w, *_ in hidden_links(member.arch)
    }


@SETTINGS
@given(arch=architectures(), kind=st.sampled_from(KINDS), seed=st.integers(0, 2**16))
def test_canonical_order_keeps_outputs_and_inverts(arch, kind, seed):
    m = random_member(arch, kind, seed)
    canon, perms = canonical_order(m)
    x = torch.randn(7, *arch.input_shape, generator=torch.Generator().manual_seed(seed))
    assert same_outputs(m, canon, x)
    assert apply_permutation(canon, invert(perms)).equal(m)
    assert set(perms) == {w for w, *_ in hidden_links(arch)}


@SETTINGS
@given(arch=architectures(), kind=st.sampled_from(KINDS), seed=st.integers(0, 2**16))
def test_permuted_copies_share_one_canonical_form(arch, kind, seed):
    m = random_member(arch, kind, seed)
    shuffled = apply_permutation(m, random_perms(m, seed + 1))
    a, b = canonical_order(shuffled)[0], canonical_order(m)[0]
    assert all(torch.equal(a.params[n], b.params[n]) for n in m.params)
    # Neurons that tie on the whole key (a supermask's fully masked units: params 0, inits not; likely
    # with a fan-in of one or two) keep their relative order, so only their other tensors may differ.
    assert tied(m) or a.equal(b)


@SETTINGS
@given(arch=architectures(), seed=st.integers(0, 2**16))
def test_every_field_is_permuted_consistently(arch, seed):
    """After permuting, the variant relations still hold: params = init * mask, weights = code * scale,
    weights = the factors' reconstruction."""
    shapes = arch.param_shapes()
    for kind in ("supermask", "quantized", "lowrank"):
        m = apply_permutation(
            random_member(arch, kind, seed), random_perms(random_member(arch, "dense"), seed)
        )
        for n in arch.weight_names():
            if kind == "supermask":
                assert torch.equal(m.params[n], m.init_params[n] * m.mask[n])
            elif kind == "quantized":
                scale = m.scales[n].reshape(-1, *[1] * (len(shapes[n]) - 1))
                assert torch.equal(m.params[n], m.codes[n].float() * scale)
            else:
                assert torch.allclose(m.params[n], reconstruct(m.factors, n), atol=1e-5)


@SETTINGS
@given(arch=architectures(), kind=st.sampled_from(KINDS), seed=st.integers(0, 2**16))
def test_matching_keeps_outputs_inverts_and_undoes_a_shuffle(arch, kind, seed):
    m = random_member(arch, kind, seed)
    reference = random_member(arch, "dense", seed + 7).params
    matched, perms = match_order(m, reference)
    x = torch.randn(7, *arch.input_shape, generator=torch.Generator().manual_seed(seed))
    assert same_outputs(m, matched, x)
    assert apply_permutation(matched, invert(perms)).equal(m)
    # Matched to itself, a shuffled copy comes back in the reference's own order.
    shuffled = apply_permutation(m, random_perms(m, seed + 1))
    back = match_order(shuffled, m.params)[0]
    assert same_outputs(m, back, x)
    # Units with the same incoming weights (a supermask's fully masked neurons: params 0, inits not)
    # are interchangeable to a match on params. When a whole layer is masked to zero, coordinate
    # ascent can settle with that layer and the next permuted together (a local optimum: the same
    # function, another order), so only an untied member must come back exactly, every tensor.
    if not tied(m):
        assert all(torch.equal(back.params[n], m.params[n]) for n in m.params) and back.equal(m)


def test_matching_aligns_trained_members_better_than_sorting(tmp_path_factory):
    """Members of a real (tiny) zoo: after matching to their MergeMany reference they sit closer to
    each other than after a canonical sort (mean pairwise cosine of the flat params)."""
    rows = [r for r in store.read_zoo(tiny_zoo(tmp_path_factory)).to_pylist() if r["final"]]
    members = [MemberTensors.from_row(r) for r in rows if r["variant"] == "dense"]
    assert len(members) >= 4
    reference = match_reference(members)

    def mean_cosine(ms) -> float:
        flat = torch.stack([torch.cat([t.flatten() for t in m.params.values()]) for m in ms]).double()
        f = torch.nn.functional.normalize(flat, dim=1)
        c = f @ f.T
        n = len(ms)
        return float((c.sum() - n) / (n * (n - 1)))

    matched = mean_cosine([match_order(m, reference)[0] for m in members])
    assert matched > mean_cosine([canonical_order(m)[0] for m in members]) + 0.05


def test_matching_errors():
    m = random_member(build_architecture_mlp(), "dense", 0)
    with pytest.raises(ConfigError, match="reference: has no layers.0.weight"):
        match_order(m, {})
    with pytest.raises(ConfigError, match="tokenizer.canonical: unknown 'magic'"):
        build_tokenizer("neuron", canonical="magic")
    with pytest.raises(ConfigError, match="needs a reference: call fit"):
        build_tokenizer("neuron", canonical="match").tokenize(m)


def build_architecture_mlp():
    from tests.tokenizer.helpers import MLP

    return MLP


@pytest.mark.parametrize("kind", KINDS)
def test_cnn_on_signals_sorts_and_matches_keeping_its_function(kind):
    """1-D kernels (out, in, k): a channel's k taps move with it, and its L/2^n inputs to the head."""
    from tests.tokenizer.helpers import CNN1D

    m = random_member(CNN1D, kind, seed=3)
    x = torch.randn(6, *CNN1D.input_shape, generator=torch.Generator().manual_seed(0))
    shuffled = apply_permutation(m, random_perms(m, 4))
    assert not shuffled.equal(m)
    for other in (canonical_order(m)[0], match_order(shuffled, m.params)[0], shuffled):
        assert same_outputs(m, other, x)
    assert canonical_order(shuffled)[0].equal(canonical_order(m)[0])
    assert all(torch.equal(match_order(shuffled, m.params)[0].params[n], t) for n, t in m.params.items())
