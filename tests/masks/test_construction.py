"""The least-squares supermask construction (mole.masks.construction) on its own."""

from __future__ import annotations

import pytest
import torch

from mole.errors import ConfigError
from mole.masks import layers
from mole.masks.construction import (
    DEFAULTS,
    check_prior,
    least_squares_masks,
    least_squares_scores,
    prior_logits,
)
from mole.nets import build_architecture
from mole.zoo.pruning import masks_from_scores, topk_straight_through
from mole.zoo.variants.supermask import frozen_init


def test_construction_finds_good_subnetworks_of_random_weights(digits):
    arch = build_architecture("mlp", digits.input_shape, 10, hidden=[32])
    init = frozen_init(arch, list(range(8)), "signed_constant")
    sparsity = torch.tensor([0.5] * 4 + [0.8] * 4)
    scores = least_squares_scores(arch, init, digits.x_train, digits.y_train, sparsity)
    assert set(scores) == set(arch.weight_names())

    def test_acc(masks: dict) -> torch.Tensor:
        params = {n: p * masks[n] if n in masks else p for n, p in init.items()}
        return (arch.forward_stacked(params, digits.x_test).argmax(-1) == digits.y_test).float().mean(1)

    masks = {n: topk_straight_through(s, sparsity) for n, s in scores.items()}
    for m in masks.values():  # exactly the requested share of each tensor removed
        removed = (m == 0).flatten(1).sum(1)
        assert removed.tolist() == [round(s * m[0].numel()) for s in sparsity.tolist()]
    g = torch.Generator().manual_seed(0)
    random = {n: topk_straight_through(torch.rand(s.shape, generator=g), sparsity) for n, s in scores.items()}
    built, chance = test_acc(masks), test_acc(random)
    # measured: 0.65 mean at 50% (random top-k masks 0.12)
    assert built[:4].mean() > 0.5 and built.mean() > chance.mean() + 0.3
    # the prior's logits: the scores standardised per tensor, times the weight
    logits = prior_logits(arch, init, sparsity, digits.x_train, digits.y_train, {**DEFAULTS, "weight": 2.0})
    for n, s in logits.items():
        assert torch.allclose(s.flatten(1).std(1), torch.full((8,), 2.0))
        assert torch.equal(topk_straight_through(s, sparsity), masks[n])


def test_check_prior_fills_defaults_and_names_bad_fields():
    assert check_prior(None) is None
    assert check_prior({}) == DEFAULTS
    assert check_prior({"passes": 1})["passes"] == 1
    with pytest.raises(ConfigError, match=r"^model\.mask_prior: unknown option\(s\) \['lambda'\]"):
        check_prior({"lambda": 1.0})
    with pytest.raises(ConfigError, match=r"^model\.mask_prior\.ridge: must be a number > 0"):
        check_prior({"ridge": 0})
    with pytest.raises(ConfigError, match=r"^model\.mask_prior\.passes: must be a positive integer"):
        check_prior({"passes": 1.5})
    with pytest.raises(ConfigError, match=r"^model\.mask_prior: must be a mapping"):
        check_prior(1.0)


def test_construction_needs_an_mlp_or_a_cnn(digits):
    class Other(type(build_architecture("mlp", digits.input_shape, 10))):
        name = "transformer"

    arch = Other(digits.input_shape, 10, hidden=[8])
    init = frozen_init(arch, [0], "signed_constant")
    with pytest.raises(ConfigError, match=r"^architecture: the mask construction handles mlp and cnn"):
        least_squares_scores(arch, init, digits.x_train, digits.y_train, torch.tensor([0.5]))


@pytest.mark.parametrize("input_shape", [(1, 8, 8), (2, 12)])
def test_the_layer_walk_is_the_architectures_forward(input_shape):
    """The construction runs layers from unfolded patches; its logits are forward_stacked's."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, *input_shape, generator=g)
    for arch in (
        build_architecture("mlp", input_shape, 10, hidden=[8, 6]),
        build_architecture("cnn", input_shape, 10, channels=[3, 4], kernel_size=3, hidden=[7]),
    ):
        init = arch.init_stacked([1, 2])
        assert torch.allclose(layers.forward(arch, init, x), arch.forward_stacked(init, x), atol=1e-5)


def test_construction_on_a_cnn_keeps_exactly_the_sparsity_and_beats_random_masks(digits):
    arch = build_architecture("cnn", digits.input_shape, 10, channels=[8, 16], hidden=[32])
    init = frozen_init(arch, list(range(6)), "signed_constant")
    sparsity = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.8, 0.8])
    x, y = digits.train_sample(512, 0)
    scores = least_squares_scores(arch, init, x, y, sparsity)
    masks = {n: topk_straight_through(s, sparsity) for n, s in scores.items()}
    assert set(masks) == set(arch.weight_names()) and masks["convs.1.weight"].shape == (6, 16, 8, 3, 3)
    for m in masks.values():
        removed = (m == 0).flatten(1).sum(1)
        assert removed.tolist() == [round(s * m[0].numel()) for s in sparsity.tolist()]
    g = torch.Generator().manual_seed(0)
    random = {n: topk_straight_through(torch.rand(s.shape, generator=g), sparsity) for n, s in scores.items()}

    def test_acc(masks: dict) -> torch.Tensor:
        params = {n: p * masks[n] if n in masks else p for n, p in init.items()}
        return (arch.forward_stacked(params, digits.x_test).argmax(-1) == digits.y_test).float().mean(1)

    built, chance = test_acc(masks), test_acc(random)
    # every member above its random mask, and by 0.2 on average (one member's margin was 0.087 on a
    # machine whose least-squares solve rounds differently: 0.21 against 0.12)
    assert built.mean() > 0.25 and (built > chance).all() and built.mean() > chance.mean() + 0.2


def test_masks_for_a_baseline_are_the_layerwise_top_k_of_the_scores(digits):
    arch = build_architecture("mlp", digits.input_shape, 10, hidden=[16])
    init = frozen_init(arch, [3, 4], "signed_constant")
    masks = least_squares_masks(arch, init, digits, 0.8, inputs=256, passes=2)
    x, y = digits.train_sample(256, 0)
    scores = least_squares_scores(arch, init, x, y, torch.full((2,), 0.8), passes=2)
    want = masks_from_scores(scores, 0.8, "layerwise")
    for n, m in masks.items():
        assert m.dtype == torch.bool and torch.equal(m, want[n])
        assert (~m).flatten(1).sum(1).tolist() == [round(0.8 * m[0].numel())] * 2
    with pytest.raises(ConfigError, match=r"^sparsity: must be in \[0, 1\)"):
        least_squares_masks(arch, init, digits, 1.0)
