"""Mismatched tokens, layouts and members fail loudly with a one-line MoleError naming the problem."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from mole.errors import ConfigError, MoleError
from mole.nets import build_architecture
from mole.tokenizer import MemberTensors, build_tokenizer
from mole.tokenizer.layer_chunk import LayerChunkTokenizer
from mole.tokenizer.neuron import NeuronTokenizer
from tests.tokenizer.helpers import CNN, MLP, random_member


@pytest.fixture(params=["neuron", "layer_chunk"])
def fitted(request):
    """A tokenizer fitted on MLP members (so bound to that architecture)."""
    return build_tokenizer(request.param).fit([random_member(MLP, "dense", s) for s in range(3)])


def test_member_of_another_architecture(fitted):
    with pytest.raises(ConfigError, match=r"^member: tokenizer built for mlp .*hidden.*, got cnn "):
        fitted.tokenize(random_member(CNN, "dense"))


def test_layout_of_another_architecture(fitted):
    _, cnn_layout = build_tokenizer(fitted.name).tokenize(random_member(CNN, "dense"))
    mlp_tokens, _ = fitted.tokenize(random_member(MLP, "dense"))
    with pytest.raises(ConfigError, match=r"^layout: tokenizer built for mlp .*, got cnn "):
        fitted.detokenize(mlp_tokens, cnn_layout)
    with pytest.raises(ConfigError, match="tokenizer built for mlp"):
        fitted.normalize(mlp_tokens, cnn_layout)


def test_tokens_of_another_architecture(fitted):
    cnn_tokens, _ = build_tokenizer(fitted.name).tokenize(random_member(CNN, "dense"))
    _, layout = fitted.tokenize(random_member(MLP, "dense"))
    t, d = layout["shape"]
    with pytest.raises(ConfigError, match=rf"^tokens: expected shape \(T, D\) = \({t}, {d}\) for mlp"):
        fitted.detokenize(cnn_tokens, layout)
    with pytest.raises(ConfigError, match="expected shape"):
        fitted.detokenize(torch.zeros(t, d)[None], layout)  # a batch is not one member


def test_layout_of_another_tokenizer_or_options():
    m = random_member(MLP, "dense")
    tokens, layout = LayerChunkTokenizer(chunk_size=8).tokenize(m)
    with pytest.raises(ConfigError, match="made by tokenizer 'layer_chunk', this is 'neuron'"):
        NeuronTokenizer().detokenize(tokens, layout)
    with pytest.raises(ConfigError, match="differ from what layer_chunk"):
        LayerChunkTokenizer(chunk_size=4).detokenize(tokens, layout)
    tampered = copy.deepcopy(layout)
    tampered["arch_config"]["hidden"] = [5, 6]  # same T and D, other shapes: no silent reshape
    with pytest.raises(ConfigError, match="differ"):
        LayerChunkTokenizer(chunk_size=8).detokenize(tokens, tampered)
    with pytest.raises(ConfigError, match="not a tokenizer layout"):
        NeuronTokenizer().detokenize(tokens, {"shape": list(tokens.shape)})


def test_bad_members_and_options():
    m = random_member(MLP, "dense")
    with pytest.raises(ConfigError, match=r"params\.layers\.0\.weight: expected torch\.float32 \(6, 16\)"):
        NeuronTokenizer().tokenize(m.replace(params={**m.params, "layers.0.weight": torch.zeros(16, 6)}))
    with pytest.raises(
        ConfigError, match="holds \\['mask'\\], but tokenizer 'neuron' gives token space to \\[\\]"
    ):
        NeuronTokenizer(fields=[]).tokenize(random_member(MLP, "masked"))
    with pytest.raises(ConfigError, match="codes and scales come together"):
        NeuronTokenizer().tokenize(random_member(MLP, "quantized").replace(scales=None))
    with pytest.raises(ConfigError, match="unknown tokenizer 'chunks'; valid: layer_chunk, neuron"):
        build_tokenizer("chunks")
    with pytest.raises(ConfigError, match="tokenizer.chunk_size"):
        LayerChunkTokenizer(chunk_size=0)
    with pytest.raises(ConfigError, match="tokenizer.fields"):
        NeuronTokenizer(fields=["masks"])
    with pytest.raises(ConfigError, match="not fitted"):
        NeuronTokenizer().normalize(*NeuronTokenizer().tokenize(m))
    with pytest.raises(ConfigError, match="factor_width"):
        NeuronTokenizer(factor_width=0).tokenize(random_member(MLP, "lowrank", rank=2))


def test_bad_rows():
    row = random_member(MLP, "dense").to_row()
    with pytest.raises(ConfigError, match="^params: holds 10 values, mlp"):
        MemberTensors.from_row({**row, "params": row["params"][:10]})
    low = random_member(MLP, "lowrank", rank=2).to_row()
    with pytest.raises(ConfigError, match="extra.factor_shapes"):
        MemberTensors.from_row({**low, "extra": json.dumps({})})


def test_other_widths_of_the_same_layers_share_a_tokenizer():
    """neuron_pruned members are narrower: same layers, fewer neurons -> same D, fewer tokens."""
    narrow = build_architecture("mlp", (1, 4, 4), 3, hidden=[4, 5])
    for tok in (NeuronTokenizer(), LayerChunkTokenizer(chunk_size=4)):
        tok.fit([random_member(MLP, "dense"), random_member(narrow, "masked")])
        (wide_t, _), (narrow_t, layout) = (
            tok.tokenize(random_member(MLP, "masked")),
            tok.tokenize(random_member(narrow, "masked")),
        )
        assert wide_t.shape[1] == narrow_t.shape[1] and narrow_t.shape[0] < wide_t.shape[0]
        assert tok.detokenize(narrow_t, layout).equal(random_member(narrow, "masked"))
    with pytest.raises(ConfigError, match="tokenizer.row_width"):
        wide = build_architecture("mlp", (1, 4, 4), 3, hidden=[20, 5])  # layer 1: 20 inputs > 16
        NeuronTokenizer().fit([random_member(narrow, "dense")]).tokenize(random_member(wide, "dense"))


def test_fit_refuses_no_members():
    with pytest.raises(MoleError, match="no members"):
        NeuronTokenizer().fit([])


def test_bad_permutation_in_layout():
    tok = NeuronTokenizer(canonical=True)
    tokens, layout = tok.tokenize(random_member(MLP, "dense"))
    layout = {**layout, "perm": {**layout["perm"], "layers.0.weight": [0, 0, 1, 2, 3, 4]}}
    with pytest.raises(
        ConfigError, match=r"^perm\.layers\.0\.weight: not a permutation of the layer's 6 neurons"
    ):
        tok.detokenize(tokens, layout)
