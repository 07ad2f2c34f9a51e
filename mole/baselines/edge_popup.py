"""edge_popup: supermasks (Ramanujan et al. 2020) over frozen random inits (the zoo's `supermask` variant)."""

from __future__ import annotations

from mole.baselines.base import Row, VariantBaseline, json_column, stack
from mole.errors import ConfigError
from mole.zoo.variants.base import GroupContext
from mole.zoo.variants.supermask import Supermask


class EdgePopupBaseline(VariantBaseline):
    """Learn a top-k mask over frozen random weights for every member; the weights are never trained.

    The frozen init is the member's `init_params` when its row has one (e.g. a supermask row, or a
    generated mask member: its biases are used as stored), else drawn from the member's seed exactly as
    the zoo's supermask variant draws it (`frozen_init`, biases zero). `sparsity` is the fraction of each
    weight tensor REMOVED, as everywhere in mole (edge-popup's `--prune-rate` is the fraction kept).
    Each row's extra holds `random_mask_test_acc`: the untrained (random) top-k mask on the same init.

    Args:
        sparsity, init, masks_per_init, inits_per_member, epochs, batch_size, lr, momentum,
        weight_decay: as for mole.zoo.variants.supermask.Supermask. With given inits,
            inits_per_member must be 1 and rows are labelled init "given".
    """

    name = "edge_popup"
    variant_cls = Supermask

    def run_group(self, ctx: GroupContext, group: list[list[Row]], config: dict) -> list[Row]:
        finals = [m[-1] for m in group]
        if finals[0].get("init_params") is None:  # a stack either all has init_params or none has
            return self.variant.run(ctx, config)
        if config["inits_per_member"] != 1:
            raise ConfigError(
                self.field("inits_per_member"),
                f"must be 1 when the members give their frozen init (init_params), got {config['inits_per_member']}",
            )
        replicas = [(0, i) for i in range(config["masks_per_init"])]
        init = stack(ctx.arch, finals, "init_params", ctx.device)  # (K, ...)
        init = {n: p.repeat(len(replicas), *[1] * (p.dim() - 1)) for n, p in init.items()}  # (R*K, ...)
        seeds = [int(json_column(r.get("extra")).get("init_seed", r["seed"])) for r in finals] * len(replicas)
        return self.variant.train_masks(ctx, {**config, "init": "given"}, init, seeds, replicas)
