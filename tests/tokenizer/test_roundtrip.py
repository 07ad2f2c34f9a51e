"""detokenize(tokenize(m)) == m bit for bit, for every policy x architecture x member kind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mole.nets import build_architecture
from mole.tokenizer import TOKENIZERS, MemberTensors, build_tokenizer
from mole.tokenizer.layer_chunk import LayerChunkTokenizer
from mole.tokenizer.layout import valid_mask
from mole.tokenizer.neuron import NeuronTokenizer
from mole.zoo import store
from tests.tokenizer.helpers import CNN1D, KINDS, architectures, random_member, tiny_zoo

SETTINGS = settings(max_examples=40, deadline=None)
TOKENIZER_STRATEGY = st.one_of(
    st.builds(LayerChunkTokenizer, chunk_size=st.integers(1, 9), canonical=st.booleans()),
    st.builds(
        NeuronTokenizer, canonical=st.booleans(), stats_per=st.sampled_from(["column", "tensor", "element"])
    ),
)


def check_roundtrip(tok, member: MemberTensors) -> tuple[torch.Tensor, dict]:
    tokens, layout = tok.tokenize(member)
    assert tokens.dtype == torch.float32 and list(tokens.shape) == layout["shape"]
    layout = json.loads(json.dumps(layout))  # the layout is plain JSON
    back = tok.detokenize(tokens.clone(), layout)
    assert back.equal(member)
    assert back.present() == member.present() and back.factor_shapes() == member.factor_shapes()
    assert (tokens[~valid_mask(layout)] == 0).all()  # padding and absent fields are zero
    # Segments partition the tokens in order: every token has exactly one layer id.
    segs = layout["segments"]
    assert segs[0]["start"] == 0 and segs[-1]["stop"] == tokens.shape[0]
    assert all(a["stop"] == b["start"] for a, b in zip(segs[:-1], segs[1:]))
    assert (tok.layer_ids(layout).diff() >= 0).all()
    return tokens, layout


@SETTINGS
@given(arch=architectures(), kind=st.sampled_from(KINDS), tok=TOKENIZER_STRATEGY, seed=st.integers(0, 2**16))
def test_roundtrip_is_bitwise(arch, kind, tok, seed):
    check_roundtrip(tok, random_member(arch, kind, seed))


@SETTINGS
@given(arch=architectures(), kind=st.sampled_from(KINDS), seed=st.integers(0, 2**16))
def test_fixed_fields_give_one_width_and_absent_fields_stay_absent(arch, kind, seed):
    """With every field given token space, dense and sparse members share D; absent fields read back None."""
    fields = ["mask", "init_params", "codes", "factors"]
    for tok in (
        LayerChunkTokenizer(chunk_size=4, fields=fields),
        NeuronTokenizer(fields=fields, factor_width=8),
    ):
        tokens, layout = check_roundtrip(tok, random_member(arch, kind, seed))
        dense, _ = tok.tokenize(random_member(arch, "dense", seed))
        assert tokens.shape[1] == dense.shape[1]


@SETTINGS
@given(arch=architectures(), seed=st.integers(0, 2**16), tok=TOKENIZER_STRATEGY)
def test_normalised_path_is_exact_up_to_one_ulp(arch, seed, tok):
    members = [random_member(arch, k, seed + i) for i, k in enumerate(KINDS)]
    tok.fit(members)
    for m in members:
        tokens, layout = tok.tokenize(m)
        normed = tok.normalize(tokens, layout)
        back_tokens = tok.denormalize(normed, layout)
        scale = tokens.abs().max().clamp(min=1)
        assert torch.allclose(back_tokens, tokens, rtol=2e-7, atol=2e-7 * scale)
        back = tok.detokenize(back_tokens, layout)
        # Masks and codes snap back to their grid exactly; floats are within rounding.
        for field in ("mask", "codes"):
            if getattr(m, field) is not None:
                assert all(torch.equal(getattr(back, field)[n], t) for n, t in getattr(m, field).items())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "tok",
    [LayerChunkTokenizer(chunk_size=5), NeuronTokenizer(), NeuronTokenizer(canonical=True)],
    ids=["layer_chunk", "neuron", "neuron-sorted"],
)
def test_cnn_on_signals_roundtrips(tok, kind):
    """A 1-D CNN member (kernels (out, in, k)): every kind, both policies, bit for bit."""
    assert CNN1D.param_shapes()["convs.1.weight"] == (3, 2, 3)
    m = random_member(CNN1D, kind, seed=5)
    tokens, layout = check_roundtrip(tok, m)
    if isinstance(tok, NeuronTokenizer) and not tok.canonical:  # one token per output channel
        conv = next(s for s in layout["segments"] if s["name"] == "convs.1")
        assert conv["stop"] - conv["start"] == 3
        assert torch.equal(tokens[conv["start"] + 1, :6], m.params["convs.1.weight"][1].flatten())


def test_neuron_tokens_hold_one_neuron_each():
    arch = build_architecture("mlp", (1, 2, 2), 3, hidden=[5])
    m = random_member(arch, "quantized", seed=1)
    tokens, layout = NeuronTokenizer().tokenize(m)
    r = 5 + 1  # the widest fan-in (layer 1: 5 hidden inputs) + the bias column
    assert tokens.shape == (5 + 3, 2 * r)
    w, b = m.params["layers.1.weight"], m.params["layers.1.bias"]
    assert torch.equal(tokens[5 + 2, :5], w[2]) and tokens[5 + 2, r - 1] == b[2]  # neuron 2 of layer 1
    assert torch.equal(tokens[5 + 2, r : r + 5], m.codes["layers.1.weight"][2].float())
    assert tokens[5 + 2, 2 * r - 1] == m.scales["layers.1.weight"][2]
    assert [s["name"] for s in layout["segments"]] == ["layers.0", "layers.1"]


def test_layer_chunk_never_crosses_a_tensor():
    arch = build_architecture("mlp", (1, 2, 2), 3, hidden=[5])
    m = random_member(arch, "dense")
    tokens, layout = LayerChunkTokenizer(chunk_size=8).tokenize(m)
    # 20 weights -> 3 tokens, 5 biases -> 1, 15 weights -> 2, 3 biases -> 1
    assert [s["stop"] - s["start"] for s in layout["segments"]] == [3, 1, 2, 1]
    assert (
        torch.equal(tokens[2, :4], m.params["layers.0.weight"].flatten()[16:]) and (tokens[2, 4:] == 0).all()
    )


@pytest.mark.parametrize("name", TOKENIZERS.names())
def test_real_zoo_rows_roundtrip(tmp_path_factory, name):
    rows = store.read_zoo(tiny_zoo(tmp_path_factory)).to_pylist()
    tok = build_tokenizer(name)
    for row in rows:
        m = MemberTensors.from_row(row)
        again = m.to_row()
        assert np.asarray(row["params"], dtype=np.float32).tobytes() == again["params"].tobytes()
        check_roundtrip(tok, m)


@SETTINGS
@given(arch=architectures(), kind=st.sampled_from(KINDS), seed=st.integers(0, 2**16))
def test_zoo_row_contract_roundtrip(arch, kind, seed):
    """to_row writes the store's column contract; from_row reads it back bit for bit."""
    m = random_member(arch, kind, seed)
    row = m.to_row()
    if row["factor_shapes"]:
        row["extra"] = json.dumps({"factor_shapes": row["factor_shapes"]})
    n_weights = sum(t.numel() for n, t in m.params.items() if n in arch.weight_names())
    if m.codes is not None:
        assert row["codes"].dtype == np.int8 and len(row["codes"]) == n_weights
        assert len(row["scales"]) == sum(arch.param_shapes()[n][0] for n in arch.weight_names())
    assert MemberTensors.from_row(row).equal(m)
