"""A tokenizer fitted on several architecture families (MLPs of two inputs, a CNN): one token width,
statistics of each family's own, exact round trips, saved and reloaded, and other families refused."""

from __future__ import annotations

import pytest
import torch

from mole.errors import ConfigError
from mole.nets import build_architecture
from mole.tokenizer import MemberTensors, Tokenizer, build_tokenizer
from mole.tokenizer.layout import valid_mask
from mole.tokenizer.member import family_tag
from tests.tokenizer.helpers import CNN, MLP, random_member

# The same parameter names as MLP (layers.0 ... layers.2) on another input: only the family tells them apart.
MLP_WIDE_INPUT = build_architecture("mlp", (1, 2, 8), 3, hidden=[6, 5])


def scaled(member: MemberTensors, factor: float) -> MemberTensors:
    return member.replace(params={n: t * factor for n, t in member.params.items()})


@pytest.fixture(params=["neuron", "layer_chunk"])
def mixed(request):
    """A tokenizer fitted on MLP members, MLP_WIDE_INPUT members 100x larger, and CNN members."""
    members = (
        [random_member(MLP, "dense", s) for s in range(4)]
        + [scaled(random_member(MLP_WIDE_INPUT, "dense", 10 + s), 100.0) for s in range(4)]
        + [random_member(CNN, "dense", 20 + s) for s in range(4)]
    )
    return build_tokenizer(request.param).fit(members), members


def test_families_share_a_width_and_keep_their_own_statistics(mixed):
    tok, members = mixed
    assert [f[0] for f in tok.families] == ["mlp", "mlp", "cnn"]
    tags = {family_tag(m.architecture, m.arch_config) for m in members}
    assert len(tags) == 3 and {k.split("::")[0] for k in tok.stats} == tags
    widths = set()
    for family in (members[:4], members[4:8]):
        normed = []
        for m in family:
            raw, layout = tok.tokenize(m)
            widths.add(raw.shape[1])
            normed.append(tok.normalize(raw, layout)[valid_mask(layout)])
            assert tok.detokenize(raw, layout).equal(m)
        # Shared statistics would leave one of the two MLP families (values 100x apart) far off unit scale.
        assert 0.5 < torch.cat(normed).std().item() < 2.0
    widths.add(tok.tokenize(members[-1])[0].shape[1])
    assert len(widths) == 1


def test_saved_and_reloaded_with_every_family(mixed, tmp_path):
    tok, members = mixed
    again = Tokenizer.from_dir(tok.save(tmp_path / "tok"))
    assert again.families == tok.families
    for m in (members[0], members[5], members[-1]):
        raw, layout = tok.tokenize(m)
        torch.testing.assert_close(again.normalize(raw, layout), tok.normalize(raw, layout), rtol=0, atol=0)
    other = build_architecture("mlp", (1, 4, 4), 3, hidden=[6, 5, 4])  # one layer more: another family
    with pytest.raises(ConfigError, match=r"^member: tokenizer built for mlp .*, mlp .*, cnn .*, got mlp "):
        again.tokenize(random_member(other, "dense"))


def test_one_family_keeps_plain_statistics_keys():
    tok = build_tokenizer("neuron").fit([random_member(MLP, "dense", s) for s in range(3)])
    assert len(tok.families) == 1 and all("::" not in k for k in tok.stats)


def test_match_aligns_each_family_to_its_own_reference(tmp_path):
    mlps = [random_member(MLP, "dense", s) for s in range(3)]
    cnns = [random_member(CNN, "dense", 10 + s) for s in range(3)]
    tok = build_tokenizer("neuron", canonical="match").fit(mlps + cnns)
    tags = {family_tag(m.architecture, m.arch_config) for m in (mlps[0], cnns[0])}
    assert {k.split("::")[0] for k in tok.reference} == tags  # one reference per family
    again = Tokenizer.from_dir(tok.save(tmp_path / "tok"))
    for m in (mlps[1], cnns[1]):
        raw, layout = tok.tokenize(m)
        assert tok.detokenize(raw, layout).equal(m)
        assert layout["perm"] == again.tokenize(m)[1]["perm"]
        alone = build_tokenizer("neuron", canonical="match").fit(mlps if m is mlps[1] else cnns)
        assert layout["perm"] == alone.tokenize(m)[1]["perm"]  # matched as a tokenizer of its family alone
