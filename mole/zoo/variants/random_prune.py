"""random_prune: random masks at sparsity s on the trained dense members (the sanity baseline)."""

from __future__ import annotations

from mole.nets import Params
from mole.zoo import pruning
from mole.zoo.pruning import Masks
from mole.zoo.variants.base import GroupContext
from mole.zoo.variants.magnitude import Magnitude


class RandomPrune(Magnitude):
    """Random pruning: the same as `magnitude` with random scores in place of |w|.

    The random mask is applied to the *trained* dense weights of `ctx.dense()` (the same start as
    `magnitude`, so the two differ only in which weights go), then optionally fine-tuned with the
    mask held. Each member's mask is drawn from its own seed (a stream apart from its init and data
    order) and does not depend on the sparsity, so its masks at 0.5 / 0.8 / 0.9 are nested and a
    rebuild draws the same ones. Only weights are pruned, biases kept; `sparsity` is the fraction of
    weights removed, exactly round(sparsity * n_weights).

    Args:
        sparsity: fraction of weights removed, in [0, 1); a scalar or a list of levels.
        scope: "global" (uniform over all weights) or "layerwise" (each tensor at the same sparsity).
        finetune_epochs: epochs of masked fine-tuning (0: none); a scalar or a list.
    """

    name = "random_prune"

    def masks(self, ctx: GroupContext, trained: Params, config: dict) -> Masks:
        weights = pruning.prunable(ctx.arch, trained)
        seeds = [m.seed for m in ctx.group.members]
        return pruning.random_masks(weights, config["sparsity"], seeds, config["scope"])
