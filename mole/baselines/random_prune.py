"""random: random pruning of given members at a matched sparsity (the zoo's `random_prune` variant)."""

from __future__ import annotations

from mole.baselines.base import VariantBaseline
from mole.zoo.variants.random_prune import RandomPrune


class RandomBaseline(VariantBaseline):
    """Remove a uniformly random round(sparsity * n_weights) of each member's weights (biases kept).

    Each member's mask comes from its own seed (mole.zoo.pruning.random_masks), so its masks at
    different sparsities are nested and a rerun draws the same ones; optional masked fine-tuning as
    for `magnitude`.

    Args:
        sparsity: fraction of weights removed, in [0, 1); a scalar or a list of levels.
        scope: "global" or "layerwise"; a scalar or a list.
        finetune_epochs: epochs of masked fine-tuning (0: none); a scalar or a list.
    """

    name = "random"
    variant_cls = RandomPrune
