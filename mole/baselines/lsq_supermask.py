"""lsq_supermask: the least-squares supermask construction (mole.masks.construction) over frozen random inits.

A closed-form strong-ticket search, no training: it is edge-popup's rival on the same inits (B6) and
the starting point the learned mask model must improve on.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from itertools import product
from typing import Any

import torch

from mole.baselines.base import (
    GROUP_SIZE,
    Baseline,
    Row,
    full_row,
    member_context,
    member_groups,
    run_digest,
    stack,
)
from mole.data import TaskData
from mole.errors import ConfigError, check_int
from mole.masks.construction import DEFAULTS as CONSTRUCTION
from mole.masks.construction import least_squares_masks
from mole.zoo import pruning
from mole.zoo.store import json_column
from mole.zoo.variants.base import Snapshot
from mole.zoo.variants.supermask import INITS, derive_seed, frozen_init, masked_params

OPTIONS = {"sparsity": 0.5, "init": "signed_constant", "inputs": CONSTRUCTION["inputs"],
           "ridge": CONSTRUCTION["ridge"], "passes": CONSTRUCTION["passes"]}  # fmt: skip


class LsqSupermaskBaseline(Baseline):
    """Keep-masks of frozen random inits from the least-squares construction, exactly `sparsity` of
    every weight tensor removed (layer-wise, as edge-popup), for MLPs and CNNs.

    The frozen init is the member's `init_params` when its row has one (labelled init "given"), else
    drawn from the member's seed exactly as edge-popup draws it (`frozen_init` with
    derive_seed(seed, "init", 0), biases zero), so both baselines see the same weights. Each row's extra
    holds the init seed, `mask_seconds` (the construction's wall time per mask, stacked) and
    `random_mask_test_acc` (a random layer-wise mask on the same init: the floor).

    Args:
        sparsity: fraction of each weight tensor REMOVED, in [0, 1); a list gives one level each.
        init: frozen weight distribution for members without init_params (supermask.INITS); a list
            gives one level each.
        inputs, ridge, passes: the construction's options (mole.masks.construction.DEFAULTS).
        group_size: members stacked per run.
    """

    name = "lsq_supermask"

    def __init__(self, group_size: int = GROUP_SIZE, **options: Any):
        unknown = set(options) - set(OPTIONS)
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(self.field(key), f"unknown option; valid: {', '.join(OPTIONS)}")
        super().__init__(group_size, **{**OPTIONS, **options})
        o = self.options
        self.sparsities = [pruning.check_sparsity(s, self.field("sparsity")) for s in _levels(o["sparsity"])]
        self.inits = _levels(o["init"])
        for v in self.inits:
            if v not in INITS:
                raise ConfigError(self.field("init"), f"must be one of {', '.join(INITS)}, got {v!r}")
        for key in ("inputs", "passes"):
            check_int(o[key], self.field(key))
        if isinstance(o["ridge"], bool) or not isinstance(o["ridge"], (int, float)) or o["ridge"] <= 0:
            raise ConfigError(self.field("ridge"), f"must be a number > 0, got {o['ridge']!r}")

    def configs(self) -> list[dict]:
        shared = {k: self.options[k] for k in ("inputs", "ridge", "passes")}
        return [{"sparsity": s, "init": i, **shared} for s, i in product(self.sparsities, self.inits)]

    def run(self, members: Sequence[Mapping[str, Any]], data: TaskData, config: dict) -> list[Row]:
        digest = run_digest(self.name, members, data)
        digits = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:6]
        rows: list[Row] = []
        for group in member_groups(members, self.group_size):
            ctx = member_context(group, data, digest)
            finals = [m[-1] for m in group]
            if finals[0].get("init_params") is not None:  # a stack either all has init_params or none has
                init = stack(ctx.arch, finals, "init_params", ctx.device)  # (K, ...)
                seeds = [int(json_column(r.get("extra")).get("init_seed", r["seed"] or 0)) for r in finals]
                label = "given"
            else:
                if any(r.get("seed") is None for r in finals):
                    raise ConfigError(self.field("members"), "a member has neither init_params nor a seed")
                seeds = [derive_seed(int(r["seed"]), "init", 0) for r in finals]
                init = {n: p.to(ctx.device) for n, p in frozen_init(ctx.arch, seeds, config["init"]).items()}
                label = config["init"]
            began = time.perf_counter()
            masks = least_squares_masks(
                ctx.arch, init, data, config["sparsity"], config["inputs"], config["ridge"], config["passes"]
            )
            seconds = (time.perf_counter() - began) / len(finals)
            random = pruning.random_masks(masks, config["sparsity"], seeds, "layerwise")
            with torch.no_grad():
                random_acc = ctx.evaluate(masked_params(init, random))["test_acc"]
                params = masked_params(init, masks)
                metrics = ctx.evaluate(params)
            per_layer = pruning.layer_sparsity(masks)
            extra = [
                json.dumps({"init": label, "init_seed": s, "mask_seconds": seconds,
                            "random_mask_test_acc": float(random_acc[k]),
                            "layer_sparsity": {n: float(v[k]) for n, v in per_layer.items()}}, sort_keys=True)
                for k, s in enumerate(seeds)
            ]  # fmt: skip
            rows += ctx.records(
                f"{self.name}-s{config['sparsity']!r}-{label}-{digits}",
                self.name,
                {"sparsity": config["sparsity"], "init": label},
                Snapshot(0, params, metrics),
                final=True,
                mask=pruning.full_mask(ctx.arch, masks).cpu(),
                init_params=ctx.arch.flatten(init).cpu(),
                sparsity=pruning.sparsity_of(masks),
                extra=extra,
            )
        return [full_row(r, variant=self.name) for r in rows]


def _levels(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]
