"""Unstructured pruning helpers shared by the pruning variants and baselines: (weights, sparsity) -> masks.

Conventions (everywhere in mole):
    sparsity   the fraction of *weights* removed (never kept), counted over the prunable tensors only
               (Architecture.weight_names(): weight matrices and conv kernels; biases are never pruned).
               A request s removes exactly round(s * n) weights (Python's round, as
               torch.nn.utils.prune does for a float `amount`).
    masks      {name: (K, *shape) bool}, True = kept, one entry per prunable tensor, computed for all
               K stacked members at once (one topk over each member's flattened scores).
    scope      "global": one ranking over all prunable weights of a member (torch's
               `global_unstructured`); "layerwise": each tensor pruned to the same sparsity on its own
               (torch's `l1_unstructured` per layer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from mole.data import TaskData
from mole.errors import ConfigError
from mole.nets import Architecture, Params
from mole.zoo.plan import MemberPlan
from mole.zoo.train import Grads, train_stacked

Masks = dict[str, torch.Tensor]  # name -> (K, *shape) bool, True = kept
SCOPES = ("global", "layerwise")


# ---------------------------------------------------------------------------- checks and counts
def check_sparsity(value: object, field: str) -> float:
    """A sparsity in [0, 1) as a float, else a ConfigError naming `field`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(field, f"must be in [0, 1), got {value!r} (the fraction of weights removed)")
    return float(value)


def check_scope(value: object, field: str) -> str:
    if value not in SCOPES:
        raise ConfigError(field, f"unknown scope {value!r}; valid: {', '.join(SCOPES)}")
    return str(value)


def n_removed(n: int, sparsity: float) -> int:
    """How many of `n` weights a request of `sparsity` removes (torch.nn.utils.prune's rounding)."""
    return round(sparsity * n)


def prunable(arch: Architecture, params: Params) -> Params:
    """The tensors that pruning acts on: the architecture's weights, biases left out."""
    return {n: params[n] for n in arch.weight_names()}


# ---------------------------------------------------------------------------- masks from scores
def lowest_removed(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask (K, N) that removes exactly the `k` lowest scores of each row of (K, N) `scores`.

    topk (not a kthvalue threshold) so that ties still remove exactly k; it is also the op torch's
    L1Unstructured uses, so masks match torch's on the same scores.
    """
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k > 0:
        idx = torch.topk(scores, k, dim=1, largest=False).indices  # (K, k)
        keep.scatter_(1, idx, False)
    return keep


def masks_from_scores(scores: Params, sparsity: float, scope: str = "global") -> Masks:
    """Remove the lowest-scoring fraction `sparsity` of weights, globally or per layer.

    Args:
        scores: {name: (K, *shape)} importance of each weight (higher = kept first).
        sparsity: fraction of the weights removed, in [0, 1).
        scope: "global" (one ranking over all tensors) or "layerwise" (each tensor on its own).
    """
    check_scope(scope, "scope")
    if scope == "layerwise":
        return {
            n: lowest_removed(s.flatten(1), n_removed(s[0].numel(), sparsity)).view_as(s)
            for n, s in scores.items()
        }
    flat = torch.cat([s.flatten(1) for s in scores.values()], dim=1)  # (K, N) over all weights
    keep = lowest_removed(flat, n_removed(flat.shape[1], sparsity))
    out, i = {}, 0
    for n, s in scores.items():
        size = s[0].numel()
        out[n] = keep[:, i : i + size].view_as(s)
        i += size
    return out


def topk_straight_through(scores: torch.Tensor, sparsity: float | torch.Tensor) -> torch.Tensor:
    """{0, 1} masks (K, *shape) keeping the highest scores of each member, with edge-popup's
    straight-through gradient (d mask / d score = 1).

    Exactly round(s * n) of each member's n scores are removed; of equal scores the earlier position
    goes first, so an all-equal start (zero logits) still keeps weights and gets a gradient.

    Args:
        scores: (K, *shape) one row per member (|edge-popup scores|, mask logits, magnitudes).
        sparsity: the fraction removed: a float for every member (rounded as `n_removed`), or a (K,)
            tensor, one per member (rounded in the scores' dtype).
    """
    flat = scores.flatten(1)  # (K, n)
    n = flat.shape[1]
    if isinstance(sparsity, torch.Tensor):
        drop = torch.round(sparsity.to(flat) * n).long().clamp(0, n)  # (K,)
    else:
        drop = torch.full((flat.shape[0],), n_removed(n, sparsity), dtype=torch.long, device=flat.device)
    keep = _keep_highest(flat.detach(), drop)
    return (keep.to(flat) + (flat - flat.detach())).view_as(scores)  # exactly 0 / 1 forward


def _keep_highest(flat: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """(K, n) bool: all but the drop[k] lowest of row k, ties removed in position order."""
    lo, hi = int(drop.min()), int(drop.max())
    if hi == 0:
        return torch.ones_like(flat, dtype=torch.bool)
    if lo == hi:  # one count for every row: a threshold is ~3x cheaper than ranking (edge-popup's every step)
        keep = flat > flat.kthvalue(lo, dim=1, keepdim=True).values
        if bool((keep.sum(1) == flat.shape[1] - lo).all()):  # no tie at the threshold: the same set
            return keep
    counts = drop.unique() if lo != hi else drop[:1]
    if len(counts) > 1 and len(counts) <= 8:  # a few counts (sparsity levels): a threshold per group
        keep = torch.empty_like(flat, dtype=torch.bool)
        for d in counts:
            rows = drop == d
            keep[rows] = _keep_highest(flat[rows], drop[rows])
        return keep
    order = flat.argsort(dim=1, stable=True)  # (K, n): positions from the lowest score up
    ranks = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return torch.empty_like(flat, dtype=torch.bool).scatter_(1, order, ranks >= drop[:, None])


def magnitude_masks(
    weights: Params, sparsity: float, scope: str = "global", current: Masks | None = None
) -> Masks:
    """Magnitude (L1) pruning: remove the smallest |w|.

    Args:
        weights: {name: (K, *shape)} the prunable tensors of K stacked members.
        sparsity: total fraction of weights removed afterwards, in [0, 1).
        scope: "global" or "layerwise".
        current: masks already applied (iterative pruning); their removed weights stay removed and
            count towards `sparsity`, which must therefore not be below the current sparsity.
    """
    scores = {n: w.detach().abs() for n, w in weights.items()}
    if current is not None:
        # Already-pruned weights rank below every live one, so they are removed first.
        scores = {n: s.masked_fill(~current[n], -math.inf) for n, s in scores.items()}
    masks = masks_from_scores(scores, sparsity, scope)
    if current is not None and any((m & ~current[n]).any() for n, m in masks.items()):
        raise ValueError(
            f"sparsity {sparsity} is below the current masks' sparsity (it would revive weights)"
        )
    return masks


def mask_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One generator per member for random masks, on a stream apart from its init and data order."""
    return [torch.Generator().manual_seed((int(s) * 6151 + 2) % (2**63 - 1)) for s in seeds]


def random_masks(weights: Params, sparsity: float, seeds: Sequence[int], scope: str = "global") -> Masks:
    """Random pruning: every weight equally likely to go, exactly round(s * n) removed.

    A member's scores depend only on its seed (not on `sparsity`), so its masks at different
    sparsities are nested.

    Args:
        weights: {name: (K, *shape)} the prunable tensors (only their shapes and device are used).
        sparsity: fraction of weights removed, in [0, 1).
        seeds: one seed per member (K).
        scope: "global" or "layerwise".
    """
    gens = mask_generators(seeds)
    device = next(iter(weights.values())).device
    scores = {n: torch.empty(w.shape) for n, w in weights.items()}
    for i, g in enumerate(gens):  # per-member streams; drawn on CPU so masks do not depend on device
        for n, w in weights.items():
            scores[n][i] = torch.rand(w.shape[1:], generator=g)
    return masks_from_scores({n: s.to(device) for n, s in scores.items()}, sparsity, scope)


# ---------------------------------------------------------------------------- using masks
def apply_masks(params: Params, masks: Masks) -> Params:
    """Params with pruned weights set to exactly 0 (unmasked tensors copied as they are)."""
    return {n: p * masks[n] if n in masks else p.clone() for n, p in params.items()}


def full_mask(arch: Architecture, masks: Masks) -> torch.Tensor:
    """(K, P) bool over *all* parameters in architecture order (the store's `mask` column): biases True."""
    k = next(iter(masks.values())).shape[0]
    device = next(iter(masks.values())).device
    every = {
        n: masks[n] if n in masks else torch.ones(k, *shape, dtype=torch.bool, device=device)
        for n, shape in arch.param_shapes().items()
    }
    return arch.flatten(every)


def sparsity_of(masks: Masks) -> torch.Tensor:
    """(K,) float64: fraction of masked weights removed, per member."""
    removed = sum((~m).flatten(1).sum(1) for m in masks.values())
    total = sum(m[0].numel() for m in masks.values())
    return removed.double().cpu() / total


def layer_sparsity(masks: Masks) -> dict[str, torch.Tensor]:
    """{name: (K,) float64} fraction removed in each tensor."""
    return {n: (~m).flatten(1).double().mean(1).cpu() for n, m in masks.items()}


def train_masked(
    forward: Callable[[Params, torch.Tensor], torch.Tensor],
    params: Params,
    masks: Masks,
    data: TaskData,
    members: Sequence[MemberPlan],
    epochs: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    grads: Grads | None = None,
) -> Params:
    """Train K members with their pruned weights held at 0 (the mask is re-applied after every step).

    Zeroing after the step (rather than masking in the forward) keeps the stored params exactly
    sparse; the kept weights follow the same updates either way.

    Args:
        forward: stacked forward (params, x) -> logits (K, B, classes).
        params: stacked start params (masked here first).
        masks: keep-masks of the prunable tensors.
        data: the task.
        members: the members' plans (optimizer, lr, ... and data order).
        epochs: override the members' epochs (fine-tuning); None keeps them.
        on_progress: called with 1 after every step.
        grads: `forward`'s hand-written gradients (train_stacked's `grads`), or None for autograd.
    """
    if epochs is not None:
        members = [replace(m, epochs=int(epochs)) for m in members]
    keep = {n: m.to(params[n].dtype) for n, m in masks.items()}

    @torch.no_grad()
    def reapply(live: Params) -> None:
        for n, m in keep.items():
            live[n].mul_(m)

    return train_stacked(
        forward,
        apply_masks(params, masks),
        data,
        members,
        after_step=reapply,
        on_progress=on_progress,
        grads=grads,
    )
