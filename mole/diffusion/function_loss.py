"""FunctionLoss: compare the *functions* of the denoiser's x0 prediction and of the clean member.

A weight-space MSE treats every direction alike, and at high noise its best x0 prediction is the mean
of the (weight-matched) members the noisy tokens may have come from. On the digits zoo that mean is a
poor network (0.88 test accuracy, well below the members'), and the generated networks sat at its
level. The function-space term asks instead for a network whose outputs on a fixed set of training
inputs match the member's: its best prediction at high noise is a network that matches the members'
*average output* (an ensemble distilled into one net), which is a good network. The term is the KL divergence from the member's softmax to the prediction's, as in
knowledge distillation; the members' own logits are the teacher (or, with `data.dense_teacher`, a pruned
row's dense parent's: the target tokens the system passes), the labels are never read.

Tokens are decoded to params inside the graph (the tokenizer's affine de-normalisation and the
layout's gather), so the term is differentiable in the prediction. A FunctionLoss reads one
architecture (the params-only plan of its architecture, whatever other fields the rows hold) and runs
it on one task's inputs; `PerCell` scores a batch that mixes architectures, shapes and tasks
(a mixed zoo, or neuron_pruned members narrower than the rest), each row with the FunctionLoss of its
own cell: its own plan over its own first T tokens (never a wider net's layout over padding),
its own forward and its own task's inputs. It needs the x0 prediction ("sample") or v-prediction
(x0 is affine in v and x_t); epsilon's x0 divides by sqrt(alpha_bar), which explodes at high noise,
and is refused.

With `sparsities`, each prediction is also scored after global magnitude pruning at a sparsity drawn
per network from that list (biases kept, as `mole sample --project sparsity=...` prunes), against
the same dense teacher, and the two KL terms are averaged: draws that stay good when projected onto
a sparsity. The mask is not differentiated (straight-through on the kept weights).

The term's cost grows with the network's forward cost, and FLOPs under-count it: the stacked
forward of a small net is memory-bound, so its time follows the activations it writes: the digits
CNN's term took 10x the quickstart MLP's per step on 1024 inputs, at 2.9x its FLOPs and 6x its
activations. `budgeted_inputs` sets the number of inputs from a budget of activation elements
(`activation_cost`), so the term costs about the same per step on any network.

With a `pool` (the system's `function_resample`), every call draws its inputs afresh from the task's
training split, as many as the fixed set would hold: the term then estimates the KL over the whole
split at the same cost per step, instead of fitting the draws to one small subset (the CNNs' budget
leaves them 78-111 inputs).

With `levels` (the system's `function_projected`), a row whose sparsity, bits or rank is not neutral
is scored by the mean of two KL terms: its prediction as it is, and projected there as `mole sample
--project` projects a draw told that level (global magnitude top-k and the symmetric or ternary bit
grid, straight-through; truncated SVD of every linear weight, its gradient projected onto the kept
singular subspace), against its own member. Projected is what a user gets; told 2 bits, the model
is rewarded for weights that survive 2-bit rounding (what QAT learns). Scoring the projection alone
measured worse (ledger C6-C8).

With `rank_residual` (the system's `function_rank_residual`), a row at a rank also pays that weight
times the fraction of its linear weights' energy outside their top-r singular subspace (`residual`).
Told a rank, the model otherwise draws dense-like nets whose truncation breaks them: 48% of the
energy past rank 2 (ledger C28); the term lifted rank 4 from 0.78 to 0.85 (C30).

For the mask model (`masked`, mole.masks.system), the student is the row's frozen init under the top-k of the
predicted mask logits, layer by layer at the row's sparsity (what sampling projects to), with
edge-popup's straight-through gradient to the logits; the teacher is the row's own subnetwork (the
edge-popup member on the same init). Unlike BCE on the member's mask bits, which only says which
weights one run kept, this scores any mask by what its network computes, so masks that differ from
the member's but work as well cost nothing.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from mole.conditions import LEVELS, TERNARY_BITS
from mole.data import TaskData, load_task
from mole.diffusion.model_dir import task_options_of
from mole.errors import ConfigError, check_int
from mole.nets import Architecture, architecture_from_config
from mole.tokenizer.layout import compile_layout
from mole.zoo.lowrank import plan_layers
from mole.zoo.pruning import topk_straight_through
from mole.zoo.quant import TERNARY, fake_quantize


class FunctionLoss(nn.Module):
    """KL(member || prediction) of the softmax outputs on fixed inputs, averaged over inputs and nets.

    Args:
        tokenizer: the fitted tokenizer the tokens were made (and normalised) with.
        inputs: (N, C, H, W) task inputs the functions are compared on.
        normalized: the tokens are normalised (ZooDataModule's `normalize`).
        sparsities: also score the prediction pruned by global magnitude at one of these (drawn per
            network); () : dense only.
        architecture: (name, arch_config) of the networks the tokens hold; None: the tokenizer's.
        rank_residual: weight of the energy past a row's rank (`residual`).
        pool: (M, C, H, W) training inputs to draw `inputs`' count from afresh at every call (`draw`)
            instead of scoring on `inputs` alone; None: `inputs` are fixed.
    """

    def __init__(
        self,
        tokenizer,
        inputs: torch.Tensor,
        normalized: bool = True,
        sparsities=(),
        architecture: tuple[str, dict] | None = None,
        rank_residual: float = 0.0,
        pool: torch.Tensor | None = None,
    ):
        super().__init__()
        self.sparsities = [float(x) for x in sparsities]
        self.rank_residual = float(rank_residual)
        if any(not 0 < x < 1 for x in self.sparsities):
            raise ConfigError("function_sparsities", f"each must be in (0, 1), got {list(sparsities)}")
        if tokenizer.stats is None or tokenizer.architecture is None:
            raise ConfigError("function_loss", "needs a fitted tokenizer")
        name, config = architecture or (tokenizer.architecture, tokenizer.arch_config)
        self.arch = architecture_from_config(name, config)
        self.weights = self.arch.weight_names()
        layout = tokenizer.plan(name, config, [], None)
        mean, std = tokenizer.normalization(layout)  # (T, D)
        if not normalized:
            mean, std = torch.zeros_like(mean), torch.ones_like(std)
        compiled = compile_layout(layout)
        self.shape = tuple(layout["shape"])
        self.names = [p["name"] for p in layout["placements"]]
        self.shapes = [tuple(p["shape"]) for p in layout["placements"]]
        self.sizes = list(compiled.sizes)
        self.register_buffer("mean", mean.float(), persistent=False)
        self.register_buffer("std", std.float(), persistent=False)
        self.register_buffer("index", compiled.index, persistent=False)
        self.register_buffer("inputs", inputs.float(), persistent=False)
        self.register_buffer("pool", None if pool is None else pool.float(), persistent=False)
        self.task: str | None = None  # the inputs' task and its options, when known (from_datamodule)
        self.task_options: dict = {}

    @classmethod
    def from_datamodule(
        cls,
        datamodule,
        num_inputs: int = 256,
        seed: int = 0,
        sparsities=(),
        normalized: bool | None = None,
        data: TaskData | None = None,
        budget: int | None = None,
    ) -> FunctionLoss:
        """The loss for a set-up ZooDataModule: `num_inputs` training inputs of its zoo's task, drawn
        with `seed` (the zoo's own task options, so the split is the one its members trained on).
        `normalized`: the tokens it will be given are normalised (None: the datamodule's setting;
        False for `masked`, which reads the batch's raw tokens). `data`: the task, already loaded
        (from `zoo_task(datamodule)`), for a caller that needs it too. `budget`: activation elements
        per network and forward pass, which cap the inputs (`budgeted_inputs`); None: no cap."""
        check_int(num_inputs, "function_inputs")
        if len(getattr(datamodule, "cells", [])) > 1:
            raise ConfigError(
                "function_loss",
                f"reads one architecture and task, this zoo mixes {len(datamodule.cells)} "
                "(PerCell scores each row with its own)",
            )
        task, options = zoo_task(datamodule)
        data = data or load_task(task, **options)
        if budget is not None:
            tok = datamodule.tokenizer
            arch = architecture_from_config(tok.architecture, tok.arch_config)
            num_inputs = budgeted_inputs(arch, num_inputs, budget)
        inputs, _ = data.train_sample(num_inputs, seed)
        normalized = datamodule.normalize if normalized is None else normalized
        loss = cls(datamodule.tokenizer, inputs, normalized, sparsities)
        loss.task, loss.task_options = task, options
        return loss

    def params(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stacked params {name: (B, *shape)} of (B, T, D) tokens, differentiable in the tokens."""
        if tuple(tokens.shape[1:]) != self.shape:
            raise ConfigError(
                "function_loss",
                f"tokens of shape {tuple(tokens.shape[1:])}, the architecture's plan is {self.shape}: "
                "the term needs one token structure (train it on one architecture and dense-shaped rows)",
            )
        return self.gather(tokens * self.std + self.mean)  # (B, T, D) raw

    def gather(self, grid: torch.Tensor) -> dict[str, torch.Tensor]:
        """{name: (B, *shape)} of whatever (B, T, D) grid sits in the params columns (no de-normalisation)."""
        values = grid.flatten(1).index_select(1, self.index).split(self.sizes, dim=1)
        return {n: v.reshape(-1, *s) for n, v, s in zip(self.names, values, self.shapes)}

    def draw(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """The inputs of one call: `inputs`, or as many drawn afresh from `pool` without replacement
        (with `generator`; None: the global RNG)."""
        if self.pool is None:
            return self.inputs
        device = generator.device if generator is not None else self.pool.device
        pick = torch.randperm(len(self.pool), generator=generator, device=device)[: len(self.inputs)]
        return self.pool.index_select(0, pick.to(self.pool.device))

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        levels: dict[str, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """KL from the target tokens' network to the predicted tokens' network (a scalar).

        Args:
            pred: (B, T, D) predicted clean tokens.
            target: (B, T, D) the clean tokens.
            levels: {"sparsity" | "bits" | "rank": (B,)} each row's own levels; rows at a non-neutral
                one are scored projected there (`projected`). None: every row as predicted.
            generator: draws the call's inputs from `pool` (`draw`); unused when the inputs are fixed.
        """
        x = self.draw(generator)
        with torch.no_grad():
            teacher = F.log_softmax(self.arch.forward_stacked(self.params(target), x), -1)
        params = self.params(pred)
        # each rank row's truncated SVD, taken once for the projected KL and the residual
        tops = self.top_subspaces(params, levels["rank"]) if levels and "rank" in levels else None
        if levels:
            kl = self.kl(teacher, params, per_row=True, x=x)  # (B,)
            both = (kl + self.kl(teacher, self.projected(params, levels, tops), per_row=True, x=x)) / 2
            loss = torch.where(at_a_level(levels), both, kl).mean()
        else:
            loss = self.kl(teacher, params, x=x)
        if self.sparsities:
            loss = (loss + self.kl(teacher, self.pruned(params), x=x)) / 2
        if self.rank_residual and tops is not None:
            loss = loss + self.rank_residual * self.residual(params, levels["rank"], tops)
        return loss

    def top_subspaces(self, params: dict[str, torch.Tensor], rank: torch.Tensor) -> dict[str, torch.Tensor]:
        """{linear weight name: (B, out, in)}: each row at a rank (rank > 0) projected onto its top-r
        left singular subspace (`onto_top_subspace`, r as the rank's layer plan caps it), the other rows
        as they are; {} when no row has a rank. One SVD per row at a rank and layer.

        Args:
            params: {name: (B, *shape)} stacked params.
            rank: (B,) each row's rank (0: full).
        """
        tops: dict[str, torch.Tensor] = {}
        rank = rank.float()
        for level in sorted({int(v) for v in rank[rank > 0].tolist()}):
            mine = ((rank - level).abs() < 1e-4).nonzero().squeeze(1)
            for plan in plan_layers(self.arch, level, "none", "rank"):
                w = params[plan.name]
                moved = onto_top_subspace(w.index_select(0, mine), plan.ranks[0])
                tops[plan.name] = tops.get(plan.name, w).index_copy(0, mine, moved)
        return tops

    def residual(
        self,
        params: dict[str, torch.Tensor],
        rank: torch.Tensor,
        tops: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The mean, over the linear weights of rows at a rank (rank > 0), of each weight's energy
        outside its top-r left singular subspace (held fixed), as a fraction of its energy: 0 for a
        weight of rank <= r. 0 when no row has a rank.

        Args:
            params: {name: (B, *shape)} stacked params.
            rank: (B,) each row's rank (0: full).
            tops: `top_subspaces(params, rank)`, when the caller already has it.
        """
        rows = rank.float() > 0
        if not bool(rows.any()):
            return params[self.weights[0]].new_zeros(())
        tops = self.top_subspaces(params, rank) if tops is None else tops
        parts = []
        for name, top in tops.items():
            w = params[name][rows]  # (b, out, in): the rows at a rank only
            rest = w - top[rows]
            parts.append(rest.pow(2).sum((1, 2)) / w.detach().pow(2).sum((1, 2)).clamp(min=1e-12))
        return torch.cat(parts).mean()

    def masked(
        self,
        logits: torch.Tensor,
        raw: torch.Tensor,
        channels: dict,
        sparsity: torch.Tensor,
        prior: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """KL from each row's member to its frozen init under the logits' top-k masks (a scalar).

        Args:
            logits: (B, T, w) mask logits, one per column of the params channel group.
            raw: (B, T, D) the rows' raw (un-normalised) tokens with channel groups "params" (the
                member) and "init_params" (its frozen init).
            channels: the tokenizer's channel groups {name: [start, stop)}.
            sparsity: (B,) fraction of each weight tensor removed.
            prior: {weight name: (B, *shape)} added to the logits before the top-k (mask_prior).
        """
        with torch.no_grad():
            member = self.gather(self.check_raw(raw))
            teacher = F.log_softmax(self.arch.forward_stacked(member, self.inputs), -1)
        init = self.channel(raw, channels, "init_params")
        scores = self.channel(logits, channels, "params", padded=False)
        if prior is not None:
            scores = {n: s + prior[n] if n in prior else s for n, s in scores.items()}
        params = {
            n: init[n] * topk_straight_through(scores[n], sparsity) if n in self.weights else init[n]
            for n in init
        }
        return self.kl(teacher, params)

    def check_raw(self, raw: torch.Tensor) -> torch.Tensor:
        if tuple(raw.shape[1:]) != self.shape:
            raise ConfigError(
                "function_loss",
                f"tokens of shape {tuple(raw.shape[1:])}, the architecture's plan is {self.shape}",
            )
        return raw

    def channel(
        self, tokens: torch.Tensor, channels: dict, name: str, padded: bool = True
    ) -> dict[str, torch.Tensor]:
        """{param name: (B, *shape)} of channel group `name` read as params: of raw (B, T, D) tokens
        (padded), or of (B, T, w) values one per params column (padded False: the mask logits)."""
        for group in ("params", name):
            if group not in channels:
                raise ConfigError("function_loss", f"the mask term needs the {group!r} channel group")
        if padded:
            tokens = self.check_raw(tokens)[..., slice(*channels[name])]
        lo, hi = channels["params"]
        # (B, T, w) -> (B, T, D), in the params columns, so the layout's gather reads them
        return self.gather(F.pad(tokens, (lo, self.shape[1] - hi)))

    def kl(
        self,
        teacher: torch.Tensor,
        params: dict[str, torch.Tensor],
        per_row: bool = False,
        x: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """KL summed over classes, averaged over inputs and nets (a scalar), or per net (B,); on the
        inputs `x` the teacher was run on (None: `inputs`)."""
        student = F.log_softmax(self.arch.forward_stacked(params, self.inputs if x is None else x), -1)
        kl = (teacher.exp() * (teacher - student)).sum(-1)  # (B, N) from (B, N, C) log-probabilities
        return kl.mean(1) if per_row else kl.mean()

    def projected(
        self,
        params: dict[str, torch.Tensor],
        levels: dict[str, torch.Tensor],
        tops: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """`params` with each row projected onto its own levels: magnitude top-k and the bit grid
        straight-through (identity gradient past them; the quantizer's scales are constants of the
        backward pass), truncated SVD as the projection onto the top singular subspace held fixed.

        Args:
            params: {name: (B, *shape)} stacked params.
            levels: {"sparsity" | "bits" | "rank": (B,)}; neutral values (sparsity 0, bits 32, rank 0)
                leave a row as it is. Bits TERNARY_BITS is the ternary grid, 2 the symmetric one.
            tops: `top_subspaces(params, levels["rank"])`, when the caller already has it (a row at a
                rank is at no other level, as the zoo's rows are: each has one variant).
        """
        out = dict(params)
        sparsity = levels.get("sparsity")
        if sparsity is not None and bool((sparsity > 0).any()):
            out = self.pruned(out, sparsity.float())
        bits = levels.get("bits")
        if bits is not None:
            for level in sorted({float(v) for v in bits.tolist()} - {float(LEVELS["bits"])}):
                rows = ((bits.float() - level).abs() < 1e-4).view(
                    -1, *[1] * (params[self.weights[0]].dim() - 1)
                )
                grid = TERNARY if abs(level - TERNARY_BITS) < 1e-4 else int(level)  # TERNARY_BITS: ternary
                moved = fake_quantize(out, self.weights, grid)
                out = {n: torch.where(rows, moved[n], v) if n in self.weights else v for n, v in out.items()}
        rank = levels.get("rank")
        if rank is not None:  # onto the top singular subspace, held fixed: the gradient is projected there
            tops = self.top_subspaces(out, rank) if tops is None else tops
            rows = (rank.float() > 0).view(-1, 1, 1)
            out = {n: torch.where(rows, tops[n], v) if n in tops else v for n, v in out.items()}
        return out

    def pruned(
        self, params: dict[str, torch.Tensor], sparsity: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """`params` with the smallest |w| of all weight tensors removed, round(s * n) per network at
        `sparsity` (B,), or at a sparsity s drawn from `sparsities` (the draw follows torch's global RNG)."""
        mags = torch.cat([params[w].detach().abs().flatten(1) for w in self.weights], 1)  # (B, P)
        if sparsity is None:
            levels = torch.tensor(self.sparsities, device=mags.device)
            sparsity = levels[torch.randint(len(levels), (mags.shape[0],), device=mags.device)]  # (B,)
        drawn = sparsity
        keep = topk_straight_through(mags, drawn).split([params[w][0].numel() for w in self.weights], 1)
        masks = {w: k.view_as(params[w]) for w, k in zip(self.weights, keep)}
        return {k: v * masks[k] if k in masks else v for k, v in params.items()}


def onto_top_subspace(w: torch.Tensor, r: int) -> torch.Tensor:
    """(B, out, in) weights projected onto their top-r left singular subspace, held fixed (found
    without gradient, in float64): the truncated SVD forward, its gradient projected there."""
    u = torch.linalg.svd(w.detach().double(), full_matrices=False)[0][..., :r].to(w.dtype)  # (B, out, r)
    return u @ (u.transpose(1, 2) @ w)


PROJECTED = ("sparsity", "bits", "rank")  # the levels `projected` moves a row onto
POOL = 16384  # the most training inputs a resampling term draws from (MNIST's 60k would hold 190 MB)


def at_a_level(levels: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B,) bool: rows with a sparsity, bits or rank that is not neutral (what `projected` moves)."""
    rows = [(v.float() - LEVELS[k]).abs() > 1e-6 for k, v in levels.items() if k in PROJECTED]
    return torch.stack(rows).any(0) if rows else torch.zeros(0, dtype=torch.bool)


class PerCell(nn.Module):
    """The function-space term of a batch whose rows may be of different cells (architecture,
    arch_config, task): each row is scored by the FunctionLoss of its own cell, on the first T
    tokens of its padded row (T: its own plan's), and the KL is averaged over rows (each row's the mean
    over its task's inputs), as if every row were scored alone.

    Args:
        losses: one FunctionLoss per cell id (the data module's `cells` order).
    """

    def __init__(self, losses: list[FunctionLoss]):
        super().__init__()
        if not losses:
            raise ConfigError("function_loss", "needs at least one cell")
        self.losses = nn.ModuleList(losses)

    @classmethod
    def from_datamodule(
        cls,
        datamodule,
        num_inputs: int = 256,
        seed: int = 0,
        sparsities=(),
        budget: int | None = None,
        rank_residual: float = 0.0,
        resample: bool = False,
    ) -> PerCell:
        """One FunctionLoss per cell of a set-up ZooDataModule: `num_inputs` training inputs of
        the cell's task drawn with `seed` (fewer where `budget`, activation elements per network
        and forward pass, allows fewer: budgeted_inputs), its own architecture's plan.
        `rank_residual`: FunctionLoss's weight of the energy past a row's rank. `resample`: as many
        inputs drawn afresh at every call from the task's training split (at most POOL of them)."""
        check_int(num_inputs, "function_inputs")
        datamodule.setup()
        tasks: dict[str, TaskData] = {}  # one load per (task, options)
        losses = []
        for s in datamodule.cells:
            key = json.dumps([s["task"], s["task_options"]], sort_keys=True)
            if key not in tasks:
                tasks[key] = load_task(s["task"], **s["task_options"])
            arch = architecture_from_config(s["architecture"], s["arch_config"])
            n = num_inputs if budget is None else budgeted_inputs(arch, num_inputs, budget)
            inputs, _ = tasks[key].train_sample(n, seed)
            loss = FunctionLoss(
                datamodule.tokenizer,
                inputs,
                datamodule.normalize,
                sparsities,
                (s["architecture"], s["arch_config"]),
                rank_residual,
                tasks[key].train_sample(POOL, seed)[0] if resample else None,
            )
            loss.task, loss.task_options = s["task"], dict(s["task_options"])
            losses.append(loss)
        return cls(losses)

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        cell: torch.Tensor | None,
        levels: dict[str, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The mean over rows of each row's KL (a scalar).

        Args:
            pred: (B, T, D) predicted clean tokens, rows zero-padded to the batch's longest.
            target: (B, T, D) the clean tokens.
            cell: (B,) long cell id of each row (None: every row is of cell 0).
            levels: {"sparsity" | "bits" | "rank": (B,)} each row's own levels, scored projected
                (FunctionLoss.forward); None: as predicted.
            generator: draws resampled inputs (FunctionLoss.draw; None: the global RNG).
        """
        if cell is None:
            cell = torch.zeros(pred.shape[0], dtype=torch.long, device=pred.device)
        ids = sorted(set(cell.tolist()))
        if ids[-1] >= len(self.losses) or ids[0] < 0:
            raise ConfigError("function_loss", f"cell ids {ids}, the term knows {len(self.losses)}")
        if len(ids) == 1:  # the whole batch: no reweighting
            fn = self.losses[ids[0]]
            return fn(pred[:, : fn.shape[0]], target[:, : fn.shape[0]], levels, generator)
        total = pred.new_zeros(())
        for i in ids:
            rows, fn = cell == i, self.losses[i]
            mine = None if levels is None else {k: v[rows] for k, v in levels.items()}
            total = (
                total
                + fn(pred[rows, : fn.shape[0]], target[rows, : fn.shape[0]], mine, generator) * rows.sum()
            )
        return total / pred.shape[0]


class _ActivationCounter(TorchDispatchMode):
    """Sums the elements of every tensor the ops it sees write to fresh memory (views excluded)."""

    def __init__(self):
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = {
            t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)
        }
        self.elements += sum(
            t.numel()
            for t in tree_leaves(out)
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in given
        )
        return out


def activation_cost(arch: Architecture) -> int:
    """Elements the architecture's stacked forward writes for one network on one input (its
    activations, pooling indices included; views are free), the cost `budgeted_inputs` divides by."""
    params = {n: torch.zeros(1, *s) for n, s in arch.param_shapes().items()}  # (1, *shape)
    x = torch.zeros(1, *arch.input_shape)  # (1, *input_shape)
    with torch.no_grad(), _ActivationCounter() as counter:
        arch.forward_stacked(params, x)
    return counter.elements


def budgeted_inputs(arch: Architecture, most: int, budget: int) -> int:
    """The inputs the function-space term runs on: `most`, fewer where `budget` (activation elements
    per network and forward pass) allows fewer, at least 1: min(most, budget // activation_cost)."""
    return max(1, min(most, budget // activation_cost(arch)))


def zoo_task(datamodule) -> tuple[str, dict]:
    """(task, task options) of a set-up ZooDataModule's zoo: its one task, with the zoo's own options
    (so the split is the one its members trained on)."""
    tasks = datamodule.vocab.get("task", [])
    if len(tasks) != 1:
        raise ConfigError("function_loss", f"needs a zoo of one task, this one holds {tasks}")
    return tasks[0], task_options_of({"zoo": str(datamodule.zoo)})
