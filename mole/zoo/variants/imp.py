"""imp: iterative magnitude pruning with weight rewinding (Frankle & Carbin; open_lth's lottery runner)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from mole.errors import ConfigError
from mole.nets import Params
from mole.zoo import pruning
from mole.zoo.train import steps_per_epoch, train_stacked
from mole.zoo.variants.base import DenseRun, GroupContext, Record, Variant, check_known
from mole.zoo.variants.magnitude import non_negative_int, pruned_records


def _fraction(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(field, f"must be in (0, 1), got {value!r}")
    return float(value)


def _positive(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(field, f"must be a positive integer, got {value!r}")
    return value


def replay_to(ctx: GroupContext, step: int) -> Params:
    """The group's dense weights at `step`, by re-running the dense training from init up to there.

    Same init, seeds and data order as `ctx.dense()`, so this is the dense trajectory itself (bitwise on
    CPU); it trains whole epochs, stopping after the one that holds `step`.
    """
    spe = steps_per_epoch(len(ctx.data.y_train), ctx.group.members[0].batch_size)
    members = [replace(m, epochs=math.ceil(step / spe)) for m in ctx.group.members]
    kept: Params = {}

    def keep(s: int, params: Params) -> None:
        kept.update({k: v.detach().clone() for k, v in params.items()})

    init = ctx.dense().init
    train_stacked(
        ctx.arch.forward_stacked,
        {k: v.clone() for k, v in init.items()},
        ctx.data,
        members,
        snapshot_steps=[step],
        on_snapshot=keep,
        on_progress=ctx.on_progress,
        grads=ctx.arch.loss_grads_stacked,
    )
    return kept


class IMP(Variant):
    """Iterative magnitude pruning with rewinding; every round's ticket is one final row per member.

    Round 1 starts from the trained dense members (`ctx.dense()`, shared with `dense`). Each round
    prunes, globally by |w|, a fraction of the weights still alive, sets the survivors back to their
    values at `rewind_step` of the dense run, and trains them with the mask held (the member's own
    optimizer, lr and data order from train_stacked; a full `epochs` schedule from the rewind point,
    since train_stacked has no start offset). After round r, sparsity is s_r = 1 - (1 - p)^r of the
    weights (biases are never pruned), exactly round(s_r * n_weights) removed.

    Rows: `params` the trained ticket (masked), `mask` its mask, `init_params` the unmasked rewind
    weights (the ticket is init_params * mask), `sparsity` the achieved fraction removed; the row's
    config adds `round` and `sparsity`, and `step` counts rewind_step plus the round's training.

    Args:
        rounds: number of prune-rewind-train rounds (rows per member).
        prune_fraction: fraction p of the remaining weights removed each round, in (0, 1).
        target_sparsity: instead of prune_fraction, the sparsity after the last round, in (0, 1);
            p = 1 - (1 - target)^(1 / rounds).
        rewind_step: step of the dense run the survivors are reset to (0: the init, as in the
            original lottery ticket; a few hundred: "late rewinding").
    """

    name = "imp"
    VALID = ("rounds", "prune_fraction", "target_sparsity", "rewind_step")

    def __init__(self, **options: Any):
        check_known(self.name, options, self.VALID)
        f = f"variants.{self.name}."
        if "prune_fraction" in options and "target_sparsity" in options:
            raise ConfigError(f + "target_sparsity", "give prune_fraction or target_sparsity, not both")
        self.rounds = _positive(options.get("rounds", 4), f + "rounds")
        self.rewind_step = non_negative_int(options.get("rewind_step", 0), f + "rewind_step")
        self.target = None
        if "target_sparsity" in options:
            self.target = _fraction(options["target_sparsity"], f + "target_sparsity")
            self.prune_fraction = 1 - (1 - self.target) ** (1 / self.rounds)
        else:
            self.prune_fraction = _fraction(options.get("prune_fraction", 0.2), f + "prune_fraction")
        super().__init__(**options)

    def configs(self) -> list[dict]:
        config = {
            "rounds": self.rounds,
            "prune_fraction": self.prune_fraction,
            "rewind_step": self.rewind_step,
        }
        if self.target is not None:
            config["target_sparsity"] = self.target
        return [config]

    def schedule(self) -> list[float]:
        """Requested sparsity after each round."""
        if self.target is not None:  # exact at the last round, whatever the rounding of p
            return [1 - (1 - self.target) ** (r / self.rounds) for r in range(1, self.rounds + 1)]
        return [1 - (1 - self.prune_fraction) ** r for r in range(1, self.rounds + 1)]

    def tag(self, config: dict) -> str:
        how = f"t{self.target!r}x{self.rounds}" if self.target is not None else f"p{self.prune_fraction!r}"
        return f"{self.name}-{how}-w{self.rewind_step}-round{config.get('round', 0)}"

    def extra_steps(self, ctx: GroupContext, config: dict) -> int:
        kept = self.rewind_step == 0 or self.rewind_step in ctx.snapshot_steps()
        return self.rounds * ctx.total_steps + (0 if kept else self.rewind_step)

    def rewind_params(self, ctx: GroupContext, run: DenseRun) -> Params:
        if self.rewind_step > ctx.total_steps:
            raise ConfigError(
                f"variants.{self.name}.rewind_step",
                f"{self.rewind_step} is past the {ctx.total_steps} training steps of shard {ctx.group.shard}",
            )
        if self.rewind_step == 0:
            return run.init
        for snap in run.snapshots:
            if snap.step == self.rewind_step:
                return snap.params
        return replay_to(ctx, self.rewind_step)

    def run(self, ctx: GroupContext, config: dict) -> list[Record]:
        run = ctx.dense()
        rewind = self.rewind_params(ctx, run)
        shapes = ctx.arch.param_shapes()
        n_weights = sum(math.prod(shapes[n]) for n in ctx.arch.weight_names())
        trained, masks, records = run.final.params, None, []
        for r, s in enumerate(self.schedule(), start=1):
            masks = pruning.magnitude_masks(pruning.prunable(ctx.arch, trained), s, "global", current=masks)
            trained = pruning.train_masked(
                ctx.arch.forward_stacked,
                rewind,
                masks,
                ctx.data,
                ctx.group.members,
                on_progress=ctx.on_progress,
                grads=ctx.arch.loss_grads_stacked,
            )
            achieved = pruning.n_removed(n_weights, s) / n_weights  # the same for every member
            row_config = {**config, "round": r, "sparsity": achieved}
            records += pruned_records(
                ctx,
                self.tag(row_config),
                self.name,
                row_config,
                trained,
                masks,
                step=self.rewind_step + ctx.total_steps,
                extra={"round": r, "rewind_step": self.rewind_step},
                init_params=ctx.arch.flatten(rewind).float().cpu(),
            )
        return records
