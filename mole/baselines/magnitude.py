"""magnitude: one-shot magnitude pruning of given members (the zoo's `magnitude` variant, run on them)."""

from __future__ import annotations

from mole.baselines.base import VariantBaseline
from mole.zoo.variants.magnitude import Magnitude


class MagnitudeBaseline(VariantBaseline):
    """Remove the smallest |w| of each member, globally or per layer, optionally fine-tune with the mask held.

    The masks are mole.zoo.pruning.magnitude_masks of the members' params; only weights are pruned
    (biases kept), exactly round(sparsity * n_weights) removed. Fine-tuning uses each member's stored
    optimizer, lr, momentum, weight decay, batch size and data order (its seed).

    Args:
        sparsity: fraction of weights removed, in [0, 1); a scalar or a list of levels
            (default [0.5, 0.8, 0.9, 0.95]).
        scope: "global" or "layerwise"; a scalar or a list.
        finetune_epochs: epochs of masked fine-tuning (0: none); a scalar or a list.
    """

    name = "magnitude"
    variant_cls = Magnitude
