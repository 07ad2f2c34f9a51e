"""lowrank: members whose layers are low-rank factorizations (truncated SVD or trained factors).

Options:
    rank: a positive integer or a list of them (each is one config); see mole.zoo.lowrank for how r
        maps to every layer's ranks and when it is an error.
    method: "svd" (truncate the trained dense member: Eckart-Young for linear layers, tensorly's
        decomposition for convs) or "factorized" (start from the same factorization of the member's
        init and train the factors directly, with the member's optimizer and hyperparameters), or both.
    conv: "cp", "tucker", "tt" or "none" (conv kernels stay whole), or a list; ignored by MLPs.

Every config stores `factors` (flat), `extra["factor_shapes"]`, `rank` and the effective `params`.
"""

from __future__ import annotations

import json

import torch

from mole.errors import ConfigError
from mole.nets import Architecture, Params
from mole.zoo.lowrank import CONV_METHODS, LayerPlan, flat_factors, from_factors, plan_layers, to_factors
from mole.zoo.train import train_stacked
from mole.zoo.variants.base import GroupContext, Record, Snapshot, Variant

METHODS = ("svd", "factorized")


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


class LowRank(Variant):
    """Low-rank members at each (rank, method, conv) of the options.

    Args:
        rank: requested rank(s), positive integers.
        method: "svd", "factorized" or both.
        conv: "cp", "tucker", "tt", "none", or a list of them.
    """

    name = "lowrank"

    def __init__(self, rank=None, method="svd", conv="none", **unknown):
        self.field = f"variants.{self.name}"
        if unknown:
            raise ConfigError(
                f"{self.field}.options", f"unknown option(s) {sorted(unknown)}; valid: conv, method, rank"
            )
        if rank is None:
            raise ConfigError(f"{self.field}.rank", "missing (a positive integer or a list of them)")
        ranks = _as_list(rank)
        for r in ranks:
            if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
                raise ConfigError(f"{self.field}.rank", f"must be a positive integer, got {r!r}")
        checks = [("method", _as_list(method), METHODS), ("conv", _as_list(conv), CONV_METHODS)]
        for key, values, valid in checks:
            for v in values:
                if v not in valid:
                    raise ConfigError(
                        f"{self.field}.{key}", f"unknown {key} {v!r}; valid: {', '.join(valid)}"
                    )
        for key, values in [("rank", ranks), *[(k, v) for k, v, _ in checks]]:
            if not values or len(set(values)) != len(values):
                raise ConfigError(f"{self.field}.{key}", f"needs distinct values, got {values}")
        super().__init__(rank=ranks, method=checks[0][1], conv=checks[1][1])

    def configs(self) -> list[dict]:
        o = self.options
        return [
            {"rank": r, "method": m, "conv": c} for m in o["method"] for c in o["conv"] for r in o["rank"]
        ]

    def tag(self, config: dict) -> str:
        return f"{self.name}-r{config['rank']}-{config['method']}-{config['conv']}"

    def check(self, arch: Architecture) -> None:
        """Raise ConfigError if any configured rank exceeds a layer's limit (before anything trains)."""
        for config in self.configs():
            plan_layers(arch, config["rank"], config["conv"], f"{self.field}.rank")

    def extra_steps(self, ctx: GroupContext, config: dict) -> int:
        return ctx.total_steps if config["method"] == "factorized" else 0

    def run(self, ctx: GroupContext, config: dict) -> list[Record]:
        self.check(ctx.arch)
        plans = plan_layers(ctx.arch, config["rank"], config["conv"], f"{self.field}.rank")
        if config["method"] == "svd":
            source = ctx.dense().final
            fparams = to_factors(source.params, plans)
            step, reference = source.step, source.params
        else:
            fparams = self._train_factors(ctx, plans)
            step, reference = ctx.total_steps, None
        params = {k: v.detach() for k, v in from_factors(ctx.arch, fparams, plans).items()}
        snap = Snapshot(step, params, ctx.evaluate(params))
        flat, shapes = flat_factors(fparams, plans)  # (K, F)
        planned = {p.name for p in plans}
        kept = sum(v[0].numel() for k, v in fparams.items() if k in ctx.arch.param_shapes())
        info = {
            "factor_shapes": shapes,
            "layer_ranks": {p.name: list(p.ranks) for p in plans},
            "stored_floats": flat.shape[1] + kept,  # factors + biases + whole kernels
            "compression": (flat.shape[1] + kept) / ctx.arch.num_params,
        }
        finite = torch.isfinite(ctx.arch.flatten(params)).all(1)  # (K,) False: training diverged
        extra = []
        for k in range(ctx.k):
            e = {**info, "finite": bool(finite[k])}
            if reference is not None:  # relative Frobenius error of the factorized weights
                num = sum(float((params[n][k] - reference[n][k]).norm() ** 2) for n in planned)
                den = sum(float(reference[n][k].norm() ** 2) for n in planned)
                e["weight_rel_error"] = (num / den) ** 0.5
            extra.append(json.dumps(e, sort_keys=True))
        return ctx.records(
            self.tag(config),
            self.name,
            config,
            snap,
            final=True,
            factors=flat,
            rank=config["rank"],
            extra=extra,
        )

    def _train_factors(self, ctx: GroupContext, plans: list[LayerPlan]) -> Params:
        """Factorize every member's init, then train the factors (and biases) of all K members at once."""

        def forward(fparams: Params, x):
            return ctx.arch.forward_stacked(from_factors(ctx.arch, fparams, plans), x)

        start = to_factors(ctx.init_params(), plans, keep_norm=True)
        return train_stacked(forward, start, ctx.data, ctx.group.members, on_progress=ctx.on_progress)
