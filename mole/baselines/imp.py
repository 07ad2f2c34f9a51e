"""imp: iterative magnitude pruning with rewinding on given members (the zoo's `imp` variant)."""

from __future__ import annotations

from mole.baselines.base import Row, VariantBaseline
from mole.errors import ConfigError
from mole.zoo.variants.base import GroupContext
from mole.zoo.variants.imp import IMP


class IMPBaseline(VariantBaseline):
    """Lottery-ticket IMP: prune globally by |w|, rewind the survivors, retrain; one row per member and round.

    Round 1 prunes the given (trained) members. The rewind point is the member's step-0 row when the
    input holds one (all of a dense member's snapshots were passed), else its init redrawn from the
    stored `seed` and `init_scale` with `Architecture.init_stacked`, which is how the zoo drew it; a
    later `rewind_step` uses the member's snapshot at that step, or replays its training from the init.
    Training uses each member's stored hyperparameters and data order (mole.zoo.train.train_stacked via
    mole.zoo.pruning.train_masked), so for final dense zoo rows the result is the zoo's own `imp` rows
    (every column but the member id's run hash).

    Args:
        rounds: prune-rewind-train rounds (rows per member), default 4.
        prune_fraction: fraction of the remaining weights removed per round, in (0, 1), default 0.2.
        target_sparsity: instead of prune_fraction, the sparsity after the last round.
        rewind_step: step of the member's training the survivors are reset to (0: its init).
    """

    name = "imp"
    variant_cls = IMP
    uses_snapshots = True

    def run_group(self, ctx: GroupContext, group: list[list[Row]], config: dict) -> list[Row]:
        if ctx.dense().init is None:
            raise ConfigError(
                self.field("members"),
                f"member {group[0][-1]['member_id']} has no seed / init_scale to re-initialise from "
                "and no step-0 row",
            )
        if any(p.optimizer is None or p.epochs is None for p in ctx.group.members):
            raise ConfigError(
                self.field("members"),
                f"member {group[0][-1]['member_id']} has no stored training hyperparameters to retrain with",
            )
        return self.variant.run(ctx, config)
