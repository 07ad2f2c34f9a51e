"""MaskRefiner: a learned correction of the least-squares construction's scores, for any MLP or CNN.

The construction (mole.masks.construction) gives every weight of a frozen init a score; its layer-wise
top-k is a good mask. The refiner moves those scores in `steps` small steps; each step reads, per
weight, a few numbers about it and about the masked network it sits in, and moves the score by a fixed
step along the straight-through mask gradient plus a correction from a small MLP shared by every
weight of every layer:

    s_0 = z (the construction's scores, standardised per tensor),
    s_{t+1} = s_t + step_size * g_t + mlp(features_t),   mask = layer-wise top-k of s_t at the sparsity,

with g_t minus the masked network's loss gradient with respect to each mask bit, standardised per
tensor (a feature below). The fixed step alone is a rule, not a model (it is what edge-popup's
training follows, taken on the full data: 32 steps lift digits CNN inits from 0.30 to 0.62); the MLP
learns, across inits, what to add to it. Of s_0 .. s_steps, each net keeps the one whose mask is most
accurate on the training examples: a cheap check, and the steps are noisy (the rule's last step on
the digits CNN is 14 points under its best one).

Features of a weight at step t: its current score s_t, its construction score z, whether it is kept
(the top-k of s_t), its distance to the tensor's keep threshold, its value (standardised), minus the
gradient of the masked network's training loss with respect to its mask bit (straight-through, on the
construction's data; standardised), the sparsity, the layer's depth fraction, whether it is a
convolution, t / steps, and the tensor's mean |w| / std (1 for signed-constant inits, 0.80 for
normal, 0.87 for uniform: the distribution, read off the weights). The gradient is what edge-popup
follows; the model learns how far and where to follow it, across inits, sparsities, init
distributions and widths: every feature is per weight, so one model serves any layer shape.

The MLPs' output layers start at zero: a new refiner follows the rule exactly, and with step_size 0
(no correction at all) it returns the construction's masks exactly. One MLP is trained on every
condition; per condition (sparsity level x init family) the refiner keeps the checkpoint that did
best on that condition's validation inits, the untrained one (the rule) included
(mole.masks.across_inits), so on validation it is never below the rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from mole.errors import ConfigError
from mole.masks.construction import standardized
from mole.masks.layers import layers_of
from mole.nets import Architecture, Params
from mole.zoo.pruning import topk_straight_through

FEATURES = 11  # per weight, see the module docstring
CONTEXT = 4  # with `context`: the gradient and the kept fraction averaged over the weight's unit and input
GRADIENT = 5  # the feature that is the standardised minus mask gradient


FAMILIES = {"signed_constant": 1.0, "normal": math.sqrt(2 / math.pi), "kaiming_uniform": math.sqrt(3) / 2}
# an init distribution's mean |w| / std, by which a given init's family is recognised


def mlp(width: int, inputs: int = FEATURES) -> nn.Sequential:
    """inputs -> width -> width -> 1, its output layer at zero (no correction)."""
    net = nn.Sequential(
        nn.Linear(inputs, width), nn.GELU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, 1)
    )
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


class MaskRefiner(ModelMixin, ConfigMixin):
    """Per-weight MLPs applied `steps` times (see the module docstring).

    `mlp` is the one being trained, on every condition at once. `kept` holds, per condition (a
    sparsity level x an init family), the checkpoint of `mlp` that did best on that condition's
    validation inits (mole.masks.across_inits), the untrained one (the construction) included;
    inference uses the kept one of each net's condition: the nearest level and the family whose
    mean |w| / std (FAMILIES) is nearest its weights'.

    Args:
        width: hidden width of the MLPs.
        steps: refinement steps (each one forward and backward pass of the masked network).
        step_size: the fixed step along the standardised mask gradient, before the MLP's correction
            (0: the MLP alone moves the scores).
        levels: the sparsity levels conditions are kept for.
        families: the init families conditions are kept for (FAMILIES keys).
        context: also read, per weight, the standardised mask gradient and the kept fraction
            averaged over its output unit (the weight tensor's row: all its fan-in) and over its input
            unit (its column), CONTEXT more features: what a weight's neighbours do, which a step
            of few passes cannot learn by moving with them.
    """

    @register_to_config
    def __init__(
        self,
        width: int = 16,
        steps: int = 32,
        step_size: float = 0.1,
        levels: tuple[float, ...] = (0.5, 0.8, 0.9),
        families: tuple[str, ...] = tuple(FAMILIES),
        context: bool = False,
    ):
        super().__init__()
        if steps < 1 or width < 1:
            raise ConfigError("refiner", f"steps and width must be >= 1, got {steps}, {width}")
        if not step_size >= 0:
            raise ConfigError("refiner.step_size", f"must be >= 0, got {step_size}")
        unknown = [f for f in families if f not in FAMILIES]
        if unknown or not families or not levels:
            raise ConfigError(
                "refiner.families", f"need levels and families of {', '.join(FAMILIES)}, got {families}"
            )
        inputs = FEATURES + CONTEXT * context
        self.mlp = mlp(width, inputs)
        self.kept = nn.ModuleList(mlp(width, inputs) for _ in range(len(levels) * len(families)))

    def condition(self, init: Params, sparsity: torch.Tensor) -> torch.Tensor:
        """(B,) long: each net's condition, the index of its kept MLP (level-major)."""
        w = next(iter(init.values()))  # the first weight tensor (B, ...)
        stat = (w.abs() / std_of(w)).flatten(1).mean(1)  # (B,)
        fams = torch.tensor([FAMILIES[f] for f in self.config.families])
        family = (stat[:, None] - fams).abs().argmin(1)
        level = (sparsity.float()[:, None] - torch.tensor(self.config.levels)).abs().argmin(1)
        return level * len(self.config.families) + family

    def forward(self, features: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """(B, ..., FEATURES) -> (B, ...) score corrections: the trained MLP's (condition None), else
        each net's kept one."""
        if condition is None:
            return self.mlp(features).squeeze(-1)
        out = torch.zeros(features.shape[:-1], dtype=features.dtype, device=features.device)
        for c in condition.unique().tolist():
            nets = condition == c
            out[nets] = self.kept[c](features[nets]).squeeze(-1)
        return out


# ---------------------------------------------------------------------------- features
def std_of(t: torch.Tensor) -> torch.Tensor:
    """(B, 1, ...) per-net standard deviation of a stacked tensor, broadcastable back onto it."""
    return t.flatten(1).std(1).clamp(min=1e-12).view(-1, *[1] * (t.dim() - 1))


def mask_gradients(
    arch: Architecture, init: Params, masks: Params, x: torch.Tensor, y: torch.Tensor
) -> Params:
    """{weight name: (B, *shape)} d loss / d mask bit of the masked networks on (x, y) (cross-entropy
    summed over nets, averaged over examples): the straight-through gradient edge-popup follows."""
    with torch.enable_grad():
        bits = {n: m.detach().requires_grad_() for n, m in masks.items()}
        params = {n: p * bits[n] if n in bits else p for n, p in init.items()}
        logits = arch.forward_stacked(params, x)  # (B, N, C)
        loss = F.cross_entropy(logits.flatten(0, 1), y.repeat(logits.shape[0]), reduction="sum") / len(y)
        grads = torch.autograd.grad(loss, list(bits.values()))
    return dict(zip(bits, grads))


def features(
    arch: Architecture,
    init: Params,
    z: Params,
    s: Params,
    sparsity: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    step: float,
    context: bool = False,
) -> Params:
    """{weight name: (B, *shape, FEATURES [+ CONTEXT])} the refiner's input at one step (module
    docstring; `context`: MaskRefiner's).

    Args:
        arch: the architecture; init: frozen weights (B, ...); z: standardised construction scores;
        s: current scores; sparsity: (B,) fraction removed per tensor; (x, y): the data the gradient
        is taken on; step: t / steps.
    """
    names = arch.weight_names()
    depth = {la.weight: i / max(1, len(names) - 1) for i, la in enumerate(layers_of(arch))}
    with torch.no_grad():
        masks = {n: topk_straight_through(s[n], sparsity) for n in names}
    grads = mask_gradients(arch, {n: p.detach() for n, p in init.items()}, masks, x, y)
    out = {}
    for n in names:
        sn, w = s[n].detach(), init[n].detach()
        flat = sn.flatten(1)  # (B, n)
        drop = torch.round(sparsity.to(flat) * flat.shape[1]).long().clamp(1, flat.shape[1])  # (B,)
        threshold = flat.sort(1).values.gather(1, drop[:, None] - 1).view(-1, *[1] * (sn.dim() - 1))
        g = -grads[n] / std_of(grads[n])
        const = torch.ones_like(sn)
        family = (w.abs() / std_of(w)).flatten(1).mean(1).view_as(std_of(w))  # (B, 1, ...)
        columns = [sn, z[n], 2 * masks[n] - 1, sn - threshold, w / std_of(w), g,
                   const * sparsity.view(-1, *[1] * (sn.dim() - 1)), const * depth[n],
                   const * float(sn.dim() > 3), const * step, const * family]  # fmt: skip
        if context:  # (B, out, in, *kernel): a row is an output unit's fan-in, a column an input's fan-out
            unit, source = tuple(range(2, sn.dim())), (1, *range(3, sn.dim()))
            columns += [
                v.mean(dims, keepdim=True).expand_as(sn) for v in (g, masks[n]) for dims in (unit, source)
            ]
        out[n] = torch.stack(columns, dim=-1)
    return out


def mask_logits(s: torch.Tensor, mask: torch.Tensor, sharpness: float = 4.0) -> torch.Tensor:
    """(B, ...) logits of being kept: each score's distance to its tensor's keep threshold (midway
    between the lowest kept and the highest removed score of `mask`, the top-k of `s`), over the
    tensor's standard deviation, times `sharpness`. Positive exactly where `mask` keeps; what a
    teacher's mask is matched through (mole.masks.across_inits.train_refiner)."""
    flat, keep = s.flatten(1), mask.detach().flatten(1) > 0
    big = torch.finfo(flat.dtype).max
    lowest_kept = torch.where(keep, flat.detach(), big).amin(1)
    highest_removed = torch.where(keep, -big, flat.detach()).amax(1)
    middle = torch.where(
        keep.all(1),
        lowest_kept - 1,
        torch.where(keep.any(1), (lowest_kept + highest_removed) / 2, highest_removed + 1),
    )
    scale = flat.detach().std(1).clamp(min=1e-12)
    return (sharpness * (flat - middle[:, None]) / scale[:, None]).view_as(s)


# ---------------------------------------------------------------------------- refinement
@dataclass(frozen=True)
class MaskProblem:
    """Frozen inits to find masks for, and what the refiner reads about them.

    Args:
        arch: an MLP or CNN architecture; init: its frozen weights, stacked (B, ...).
        scores: the construction's raw scores (least_squares_scores).
        sparsity: (B,) fraction of each weight tensor removed.
        x, y: training examples the gradient features are taken on and each net's step is chosen on.
    """

    arch: Architecture
    init: Params
    scores: Params
    sparsity: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor

    def accuracy(self, scores: Params) -> torch.Tensor:
        """(B,) accuracy on (x, y) of each net under the layer-wise top-k of `scores`."""
        with torch.no_grad():
            masks = {n: topk_straight_through(v, self.sparsity) for n, v in scores.items()}
            params = {n: p * masks[n] if n in masks else p for n, p in self.init.items()}
            return (self.arch.forward_stacked(params, self.x).argmax(-1) == self.y).float().mean(1)


def refinements(model: MaskRefiner, p: MaskProblem, training: bool = False) -> Iterator[Params]:
    """Yield the scores {weight name: (B, *shape)} after every step; the last one's layer-wise top-k at
    `p.sparsity` is the mask.

    Differentiable in the model's parameters (features are read detached); with a zero output layer
    every step is the rule's, and with step_size 0 too, the standardised `p.scores` themselves.

    Args:
        model: the refiner.
        p: the inits and what is read about them.
        training: use the MLP being trained for every net (else each net's kept one).
    """
    condition = None if training else model.condition(p.init, p.sparsity)
    z = standardized(p.scores)
    s = dict(z)
    steps, size = model.config.steps, model.config.step_size
    for t in range(steps):
        feats = features(
            p.arch, p.init, z, s, p.sparsity, p.x, p.y, t / steps, model.config.get("context", False)
        )
        s = {n: s[n] + size * f[..., GRADIENT] + model(f, condition) for n, f in feats.items()}
        yield s


def refine(model: MaskRefiner, p: MaskProblem, training: bool = False) -> Params:
    """The refined scores: per net, of the construction's (step 0) and every step's, the ones whose mask
    is most accurate on the training examples (p.x, p.y) (the earliest of equals; `refinements` has
    the arguments). Cheap (one forward pass per step) and never below the construction on them."""
    best = standardized(p.scores)
    best_acc = p.accuracy(best)
    for s in refinements(model, p, training):
        acc = p.accuracy(s)
        better = acc > best_acc  # (B,)
        best = {n: torch.where(better.view(-1, *[1] * (v.dim() - 1)), s[n], v) for n, v in best.items()}
        best_acc = torch.maximum(best_acc, acc)
    return best
