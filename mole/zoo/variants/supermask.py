"""supermask: edge-popup (Ramanujan et al. 2020): frozen random weights, learned scores, top-k mask.

Every weight tensor gets a real-valued score per weight; the forward pass uses the weights whose |score|
is in the top (1 - sparsity) of their layer (layer-wise top-k, as in the paper) and the scores learn
through a straight-through gradient. `sparsity` is the fraction of weights REMOVED, as everywhere in
mole (edge-popup's `--prune-rate` is the fraction kept: a known trap).

Biases: edge-popup's networks have none; ours do, so biases are frozen at zero and never masked (their
mask bits are True). A stored row therefore holds `init_params` (the frozen weights, zero biases),
`mask` (the final top-k mask), `params = init_params * mask` and the init seed in `extra`, so the
subnetwork can be rebuilt from the row alone, or its init regenerated with `frozen_init`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace
from itertools import product

import numpy as np
import torch

from mole.errors import ConfigError
from mole.nets import Architecture, Params
from mole.zoo import pruning
from mole.zoo.plan import MemberPlan
from mole.zoo.train import Forward, steps_per_epoch, train_stacked
from mole.zoo.variants.base import GroupContext, Record, Snapshot, Variant, check_known

INITS = ("signed_constant", "normal", "kaiming_uniform")
DEFAULTS = {
    "sparsity": 0.5,
    "init": "signed_constant",
    "masks_per_init": 1,
    "inits_per_member": 1,
    "epochs": None,  # None: the member's
    "batch_size": None,  # None: the member's
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 0.0005,
}


# ---------------------------------------------------------------------------- building blocks
def derive_seed(seed: int, stream: str, index: int) -> int:
    """A 31-bit seed for stream `stream` ("init", "scores") number `index` of a parent seed."""
    key = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:4], "little")
    return int(np.random.SeedSequence([int(seed), key, int(index)]).generate_state(1)[0]) & 0x7FFFFFFF


def frozen_init(arch: Architecture, seeds: list[int], init: str) -> Params:
    """Edge-popup's frozen random weights, one generator per member; biases are zero.

    Args:
        arch: the architecture.
        seeds: one init seed per member (K,).
        init: "signed_constant" (±sqrt(2/fan_in): the Kaiming-normal std with random signs),
            "normal" (Kaiming normal, N(0, 2/fan_in)) or "kaiming_uniform" (U(±sqrt(6/fan_in))).
    """
    shapes = arch.param_shapes()
    out = {n: torch.zeros(len(seeds), *s) for n, s in shapes.items()}  # biases stay zero
    for i, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(int(seed))
        for name in arch.weight_names():
            shape, std = shapes[name], math.sqrt(2.0 / arch.fan_in(name))  # ReLU gain, fan_in mode
            if init == "signed_constant":
                w = (torch.randint(0, 2, shape, generator=g) * 2 - 1).float() * std
            elif init == "normal":
                w = torch.randn(shape, generator=g) * std
            elif init == "kaiming_uniform":
                w = (torch.rand(shape, generator=g) * 2 - 1) * (std * math.sqrt(3.0))
            else:
                raise ValueError(f"unknown init {init!r}; valid: {', '.join(INITS)}")
            out[name][i] = w
    return out


def topk_masks(scores: Params, sparsity: float) -> Params:
    """Float {0, 1} masks (K, *shape) keeping the top (1 - sparsity) of |score| in each layer."""
    return {n: pruning.topk_straight_through(s.abs(), sparsity) for n, s in scores.items()}


def masked_params(init: Params, masks: Params) -> Params:
    """Effective params: masked weights, biases (not in `masks`) as they are."""
    return {
        n: torch.where(masks[n] > 0, p, torch.zeros_like(p)) if n in masks else p for n, p in init.items()
    }


def supermask_forward(arch: Architecture, init: Params, sparsity: float) -> Forward:
    """(scores, x) -> logits of the frozen `init` under the scores' top-k masks (straight-through)."""

    def forward(scores: Params, x: torch.Tensor) -> torch.Tensor:
        masks = topk_masks(scores, sparsity)
        return arch.forward_stacked({n: p * masks[n] if n in masks else p for n, p in init.items()}, x)

    return forward


# ---------------------------------------------------------------------------- the variant
class Supermask(Variant):
    """Edge-popup masks over frozen random inits, trained stacked for every member, init and mask.

    Each (sparsity, init) is one config; within it, every member's `inits_per_member` x
    `masks_per_init` replicas are trained together in one stacked run and stored as separate rows
    (member ids `...-init{j}-mask{i}-...`). Init j of a member is seeded from the member's seed, mask i
    of an init from the init's seed (its score init and data order). A row's `variant_config` holds
    the levels (sparsity, init); its hparam columns state how the scores were trained (optimizer sgd,
    lr, momentum, weight_decay, epochs, batch_size; init_scale 1) and `extra` the replica's indices
    and seeds.

    Args:
        sparsity: fraction of each weight tensor REMOVED, in [0, 1); a list gives one config each.
        init: frozen weight distribution (see `frozen_init`); a list gives one config each.
        masks_per_init: masks trained per init.
        inits_per_member: frozen inits per member.
        epochs, batch_size: score training length and batch; None uses the member's.
        lr, momentum, weight_decay: SGD on the scores (the paper's 0.1, 0.9, 5e-4).
    """

    name = "supermask"

    def __init__(self, **options):
        f = f"variants.{self.name}"
        check_known(self.name, options, DEFAULTS)
        opts = {**DEFAULTS, **options}
        self.sparsities = [
            pruning.check_sparsity(v, f"{f}.sparsity") for v in _levels(opts["sparsity"], f"{f}.sparsity")
        ]
        self.inits = _levels(opts["init"], f"{f}.init")
        for v in self.inits:
            _check(v, f"{f}.init", lambda v: v in INITS, f"one of {', '.join(INITS)}")
        for key in ("masks_per_init", "inits_per_member"):
            _check(opts[key], f"{f}.{key}", lambda v: _is_int(v) and v >= 1, "an integer >= 1")
        for key in ("epochs", "batch_size"):
            _check(
                opts[key],
                f"{f}.{key}",
                lambda v: v is None or _is_int(v) and v >= 1,
                "an integer >= 1 or null",
            )
        _check(opts["lr"], f"{f}.lr", lambda v: _is_number(v) and v > 0, "a number > 0")
        _check(opts["momentum"], f"{f}.momentum", lambda v: _is_number(v) and 0 <= v < 1, "in [0, 1)")
        _check(opts["weight_decay"], f"{f}.weight_decay", lambda v: _is_number(v) and v >= 0, "a number >= 0")
        super().__init__(**opts)

    def configs(self) -> list[dict]:
        shared = {k: v for k, v in self.options.items() if k not in ("sparsity", "init")}
        return [{"sparsity": s, "init": i, **shared} for s, i in product(self.sparsities, self.inits)]

    def tag(self, config: dict, init_index: int = 0, mask_index: int = 0) -> str:
        # Levels readable; a short hash of all options keeps two differently-set entries apart.
        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:6]
        return (
            f"{self.name}-s{config['sparsity']!r}-{config['init']}-init{init_index}-mask{mask_index}-{digest}"
        )

    def extra_steps(self, ctx: GroupContext, config: dict) -> int:
        m = self._plan(ctx.group.members[0], config)
        return m.epochs * steps_per_epoch(len(ctx.data.y_train), m.batch_size)  # one stacked run

    def run(self, ctx: GroupContext, config: dict) -> list[Record]:
        replicas = list(product(range(config["inits_per_member"]), range(config["masks_per_init"])))
        # Stack every replica of every member: rows r*K .. r*K+K-1 hold replica r = (init j, mask i).
        init_seeds = [derive_seed(m.seed, "init", j) for j, _ in replicas for m in ctx.group.members]
        drawn = frozen_init(ctx.arch, init_seeds, config["init"])  # (R*K, ...), drawn on CPU
        init = {n: p.to(ctx.device) for n, p in drawn.items()}
        return self.train_masks(ctx, config, init, init_seeds, replicas)

    def train_masks(
        self, ctx: GroupContext, config: dict, init: Params, init_seeds: list[int], replicas: list[tuple]
    ) -> list[Record]:
        """Train edge-popup masks over the frozen `init` and return their rows (also used by mole.baselines).

        Args:
            ctx: the group (its members' plans give data order and, via `_plan`, the score training).
            config: one of `configs()` (its "init" only labels the rows).
            init: frozen weights (R*K, ...) on ctx.device, replica-major: rows r*K .. r*K+K-1 are replica r.
            init_seeds: (R*K,) the seed each frozen init was drawn from (stored; seeds the scores).
            replicas: the R (init index j, mask index i) pairs.
        """
        arch, k, sparsity = ctx.arch, ctx.k, config["sparsity"]
        score_seeds = [derive_seed(s, "scores", replicas[row // k][1]) for row, s in enumerate(init_seeds)]
        # Scores start as in the paper, kaiming_uniform(a=sqrt(5)): PyTorch's default layer init.
        start = arch.init_stacked(score_seeds)
        scores = {n: start[n].to(ctx.device) for n in arch.weight_names()}

        plans = [self._plan(m, config) for m in ctx.group.members]
        train_plans = [replace(p, seed=s) for p, s in zip(plans * len(replicas), score_seeds)]  # data order
        with torch.no_grad():  # untrained scores give a random mask: the baseline edge-popup must beat
            random_acc = ctx.evaluate(masked_params(init, topk_masks(scores, sparsity)))["test_acc"]
        scores = train_stacked(
            supermask_forward(arch, init, sparsity),
            scores,
            ctx.data,
            train_plans,
            on_progress=ctx.on_progress,
        )
        with torch.no_grad():
            masks = {n: m > 0 for n, m in topk_masks(scores, sparsity).items()}  # (R*K, *shape) bool
        params = masked_params(init, masks)
        metrics = ctx.evaluate(params)
        full, flat_init = pruning.full_mask(arch, masks).cpu(), arch.flatten(init).cpu()  # (R*K, P)
        achieved, per_layer = pruning.sparsity_of(masks), pruning.layer_sparsity(masks)
        step = self.extra_steps(ctx, config)
        rec_ctx = replace(ctx, group=replace(ctx.group, members=tuple(plans)))  # rows state the hparams used
        records = []
        for r, (j, i) in enumerate(replicas):
            rows = slice(r * k, (r + 1) * k)
            extra = [
                json.dumps(
                    {
                        "init": config["init"],
                        "init_index": j,
                        "init_seed": init_seeds[row],
                        "mask_index": i,
                        "score_seed": score_seeds[row],
                        "random_mask_test_acc": float(random_acc[row]),
                        "layer_sparsity": {n: float(v[row]) for n, v in per_layer.items()},
                    },
                    sort_keys=True,
                )
                for row in range(rows.start, rows.stop)
            ]
            snap = Snapshot(
                step, {n: p[rows] for n, p in params.items()}, {n: v[rows] for n, v in metrics.items()}
            )
            records += rec_ctx.records(
                self.tag(config, j, i),
                self.name,
                {"sparsity": sparsity, "init": config["init"]},  # the levels; the rest is in hparams
                snap,
                final=True,
                mask=full[rows],
                init_params=flat_init[rows],
                sparsity=achieved[rows],
                extra=extra,
            )
        return records

    @staticmethod
    def _plan(member: MemberPlan, config: dict) -> MemberPlan:
        """The member's plan as its scores are trained (so each row states the hyperparameters used)."""
        return replace(
            member,
            optimizer="sgd",
            lr=float(config["lr"]),
            momentum=float(config["momentum"]),
            weight_decay=float(config["weight_decay"]),
            init_scale=1.0,  # the frozen init has its own fixed scale (see frozen_init)
            epochs=config["epochs"] or member.epochs,
            batch_size=config["batch_size"] or member.batch_size,
        )


# ---------------------------------------------------------------------------- option checks
def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(value, field: str, ok, what: str) -> None:
    if not ok(value):
        raise ConfigError(field, f"must be {what}, got {value!r}")


def _levels(value, field: str) -> list:
    """A scalar or a non-empty list of distinct levels."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ConfigError(field, "an empty list of levels")
    if len({json.dumps(v) for v in values}) != len(values):
        raise ConfigError(field, f"repeated levels in {values}")
    return values
