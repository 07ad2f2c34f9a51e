"""magnitude: one-shot magnitude pruning of the trained dense members, optionally fine-tuned with the mask."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import torch

from mole.errors import ConfigError
from mole.nets import Params
from mole.zoo import pruning
from mole.zoo.pruning import Masks
from mole.zoo.train import steps_per_epoch
from mole.zoo.variants.base import GroupContext, Record, Snapshot, Variant, check_known


# ---------------------------------------------------------------------------- shared by the pruning variants
def levels(value: Any, field: str, check: Callable[[Any, str], Any]) -> tuple:
    """A scalar or a non-empty list of distinct levels, each passed through `check(value, field)`."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ConfigError(field, "an empty list of levels")
    out = tuple(check(v, field) for v in items)
    if len(set(out)) != len(out):
        raise ConfigError(field, f"repeated levels in {items}")
    return out


def non_negative_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(field, f"must be a non-negative integer, got {value!r}")
    return value


def pruned_records(
    ctx: GroupContext,
    tag: str,
    variant: str,
    config: dict,
    params: Params,
    masks: Masks,
    step: int,
    extra: dict | None = None,
    **columns: Any,
) -> list[Record]:
    """Evaluate masked params and turn them into final rows with the mask and sparsity columns set.

    Args:
        params: stacked params, already masked (the effective weights).
        masks: keep-masks of the prunable tensors (K, *shape).
        step: training steps the weights have seen (for the step / epoch columns).
        extra: metrics for the `extra` JSON column: (K,) tensors (one value per member) or JSON-able
            values shared by all members; per-layer sparsity is always added.
        columns: further (K, ...) columns (e.g. init_params).
    """
    per_layer = pruning.layer_sparsity(masks)
    extras = [
        json.dumps(
            {
                **{n: float(v[k]) if isinstance(v, torch.Tensor) else v for n, v in (extra or {}).items()},
                "layer_sparsity": {n: float(v[k]) for n, v in per_layer.items()},
            },
            sort_keys=True,
        )
        for k in range(ctx.k)
    ]
    snap = Snapshot(step, params, ctx.evaluate(params))
    return ctx.records(
        tag,
        variant,
        config,
        snap,
        final=True,
        mask=pruning.full_mask(ctx.arch, masks).cpu(),
        sparsity=pruning.sparsity_of(masks),
        extra=extras,
        **columns,
    )


# ---------------------------------------------------------------------------- the variant
class Magnitude(Variant):
    """Global or layer-wise one-shot magnitude pruning of each group's trained dense members.

    The dense run is `ctx.dense()` (shared with the `dense` variant in the same shard). Only weights
    (Architecture.weight_names()) are pruned; biases are kept. `sparsity` is the fraction of weights
    removed; exactly round(sparsity * n_weights) go. Each (scope, sparsity, finetune_epochs) is one
    config, and each config gives one final row per member.

    Args:
        sparsity: fraction of weights removed, in [0, 1); a scalar or a list of levels.
        scope: "global" (one ranking over all weights) or "layerwise" (every tensor at the same
            sparsity); a scalar or a list.
        finetune_epochs: epochs of masked fine-tuning after pruning (0: none) with the member's own
            optimizer, lr and data order; a scalar or a list.
    """

    name = "magnitude"
    DEFAULTS: dict[str, Any] = {"sparsity": [0.5, 0.8, 0.9, 0.95], "scope": "global", "finetune_epochs": 0}

    def __init__(self, **options: Any):
        check_known(self.name, options, tuple(self.DEFAULTS))
        options = {**self.DEFAULTS, **options}
        f = f"variants.{self.name}."
        self.sparsities = levels(options["sparsity"], f + "sparsity", pruning.check_sparsity)
        self.scopes = levels(options["scope"], f + "scope", pruning.check_scope)
        self.epochs = levels(options["finetune_epochs"], f + "finetune_epochs", non_negative_int)
        super().__init__(**options)

    def configs(self) -> list[dict]:
        return [
            {"scope": scope, "sparsity": s, "finetune_epochs": e}
            for scope, s, e in itertools.product(self.scopes, self.sparsities, self.epochs)
        ]

    def tag(self, config: dict) -> str:
        return f"{self.name}-{config['scope']}-s{config['sparsity']!r}-ft{config['finetune_epochs']}"

    def masks(self, ctx: GroupContext, trained: Params, config: dict) -> Masks:
        """The keep-masks of one config for the group's trained weights (K, ...)."""
        weights = pruning.prunable(ctx.arch, trained)
        return pruning.magnitude_masks(weights, config["sparsity"], config["scope"])

    def extra_steps(self, ctx: GroupContext, config: dict) -> int:
        return config["finetune_epochs"] * steps_per_epoch(
            len(ctx.data.y_train), ctx.group.members[0].batch_size
        )

    def run(self, ctx: GroupContext, config: dict) -> list[Record]:
        dense = ctx.dense().final
        masks = self.masks(ctx, dense.params, config)
        params = pruning.apply_masks(dense.params, masks)
        step = dense.step
        if config["finetune_epochs"]:
            params = pruning.train_masked(
                ctx.arch.forward_stacked,
                params,
                masks,
                ctx.data,
                ctx.group.members,
                epochs=config["finetune_epochs"],
                on_progress=ctx.on_progress,
                grads=ctx.arch.loss_grads_stacked,
            )
            spe = steps_per_epoch(len(ctx.data.y_train), ctx.group.members[0].batch_size)
            step += config["finetune_epochs"] * spe
        extra = {"dense_test_acc": dense.metrics["test_acc"]}  # the accuracy before pruning
        return pruned_records(ctx, self.tag(config), self.name, config, params, masks, step, extra)
