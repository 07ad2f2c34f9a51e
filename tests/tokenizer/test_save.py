"""Fitted statistics are right, and a saved tokenizer reloads to give identical tokens."""

from __future__ import annotations

import json

import pytest
import torch

from mole.errors import ConfigError
from mole.nets import build_architecture
from mole.tokenizer import TOKENIZERS, MemberTensors, Tokenizer, build_tokenizer
from mole.tokenizer.layer_chunk import LayerChunkTokenizer
from mole.tokenizer.neuron import NeuronTokenizer
from mole.zoo import store
from tests.tokenizer.helpers import MLP, random_member, tiny_zoo


@pytest.mark.parametrize("canonical", [True, "match"])
@pytest.mark.parametrize("name", TOKENIZERS.names())
def test_save_then_from_dir_gives_identical_tokens(tmp_path_factory, tmp_path, name, canonical):
    rows = store.read_zoo(tiny_zoo(tmp_path_factory)).to_pylist()
    tok = build_tokenizer(name, canonical=canonical).fit(rows[:20])
    tok.save(tmp_path / "tok")
    config = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    assert config["tokenizer"] == name and (tmp_path / "tok" / "stats.safetensors").is_file()
    again = Tokenizer.from_dir(tmp_path / "tok")
    assert type(again) is type(tok) and again.options() == tok.options()
    if canonical == "match":
        assert again.reference.keys() == tok.reference.keys()
        assert all(torch.equal(again.reference[k], v) for k, v in tok.reference.items())
    for row in rows[20:]:
        m = MemberTensors.from_row(row)
        (a, la), (b, lb) = tok.tokenize(m), again.tokenize(m)
        assert la == lb and torch.equal(a, b)
        assert torch.equal(tok.normalize(a, la), again.normalize(b, lb))
        assert again.detokenize(b, lb).equal(m)


def test_fitted_statistics_match_a_direct_computation():
    members = [random_member(MLP, k, s) for s, k in enumerate(["dense", "masked", "quantized"] * 3)]
    tok = NeuronTokenizer().fit(members)
    assert tok.fields == ["mask", "codes"]  # the union seen
    w = torch.stack([m.params["layers.1.weight"] for m in members]).double()  # (9, 5, 6)
    s = tok.stats["params/layers.1.weight"]
    assert torch.allclose(s["mean"], w.mean((0, 1))) and torch.allclose(
        s["std"], w.std((0, 1), unbiased=False)
    )
    pooled = NeuronTokenizer(stats_per="tensor").fit(members).stats["params/layers.1.weight"]
    assert torch.allclose(pooled["mean"], w.mean().expand(6)) and torch.allclose(
        pooled["std"], w.std(unbiased=False).expand(6)
    )
    # A constant column (the all-True bias mask) is centred, not divided by zero.
    bias_mask = tok.stats["mask/layers.1.bias"]
    assert bias_mask["mean"].item() == 1.0 and bias_mask["std"].item() == 1.0
    tokens, layout = tok.tokenize(members[1])
    assert torch.isfinite(tok.normalize(tokens, layout)).all()


def test_element_statistics_are_per_weight_and_survive_save(tmp_path):
    members = [random_member(MLP, "dense", s) for s in range(7)]
    tok = NeuronTokenizer(stats_per="element").fit(members)
    w = torch.stack([m.params["layers.1.weight"] for m in members]).double()  # (7, 5, 6)
    s = tok.stats["params/layers.1.weight"]
    assert torch.allclose(s["element_mean"], w.mean(0)) and torch.allclose(
        s["element_std"], w.std(0, unbiased=False)
    )
    assert torch.allclose(s["mean"], w.mean((0, 1)))  # the column statistics are kept beside
    # Normalised tokens are each weight's z-score, and denormalize inverts them.
    tokens, layout = tok.tokenize(members[2])
    normed = tok.normalize(tokens, layout)
    p = next(p for p in layout["placements"] if p["name"] == "layers.1.weight")
    block = normed[p["row"] : p["row"] + 5, p["col"] : p["col"] + 6].double()
    assert torch.allclose(block, (w[2] - w.mean(0)) / w.std(0, unbiased=False), atol=1e-5)
    assert torch.allclose(tok.denormalize(normed, layout), tokens, atol=1e-6)
    tok.save(tmp_path / "tok")
    again = Tokenizer.from_dir(tmp_path / "tok")
    assert torch.equal(again.normalize(tokens, layout), normed)


def test_element_statistics_fall_back_to_columns_for_another_width():
    wide = [random_member(MLP, "dense", s) for s in range(5)]
    narrow_arch = build_architecture("mlp", (1, 4, 4), 3, hidden=[3, 5])
    narrow = random_member(narrow_arch, "dense", 9)
    tok = NeuronTokenizer(stats_per="element").fit(wide + [narrow])
    s = tok.stats["params/layers.0.weight"]
    assert s["element_mean"].shape == (6, 16)  # the row count most members have
    tokens, layout = tok.tokenize(narrow)
    normed = tok.normalize(tokens, layout)
    p = next(p for p in layout["placements"] if p["name"] == "layers.0.weight")
    block = normed[p["row"] : p["row"] + 3, p["col"] : p["col"] + 16].double()
    raw = narrow.params["layers.0.weight"].double()
    assert torch.allclose(block, (raw - s["mean"]) / s["std"], atol=1e-5)


def test_from_dir_errors(tmp_path):
    with pytest.raises(ConfigError, match="missing \\(not a saved tokenizer\\)"):
        Tokenizer.from_dir(tmp_path / "nothing")
    NeuronTokenizer().save(tmp_path / "unfitted")
    assert Tokenizer.from_dir(tmp_path / "unfitted").stats is None
    with pytest.raises(ConfigError, match="holds a 'neuron' tokenizer, not 'layer_chunk'"):
        LayerChunkTokenizer.from_dir(tmp_path / "unfitted")
