"""The least-squares supermask: a good subnetwork of given random weights in closed form, no training.

Edge-popup finds a supermask by SGD on scores for each init. This constructs one layer by layer from
the input, from the task's training data: the kept weights of a layer are the ones that agree most
with the ridge regression of what the layer's units should output on what they actually receive (the
earlier layers' masked activations),

    beta = (H^T H + lambda I)^-1 H^T T,     score_ij = w_ij * beta_ji,     keep the top (1 - s) per tensor,

with H the centred inputs of the layer and T the centred targets. The target of an output unit is
its class (one-hot); a hidden unit's is the class vote it casts downstream, Y @ V with V the
product of the later layers' (masked) weights: the unit should fire for the classes its paths add
to. The first pass takes the later layers whole; each further pass recomputes the votes through
the previous pass's masks. Without the regression (plain correlation, no (H^T H)^-1) the masks are
far worse (0.55 test accuracy on digits at 50%).

A convolution is the same regression over its unfolded input patches (mole.masks.layers): one row
per example and output position, one column per kernel weight, one target per output channel. Its
target is per example: d (one-hot . logits) / d unit through the real later layers (their ReLU gates
and max-pool routes, the previous pass's masks), which beat the linear votes on convolutions (digits
CNN at 50%, 3 passes: 0.46 against 0.32).

Users: `least_squares_masks` is the construction on its own (the `lsq_supermask` baseline); the
MaskRefiner (mole.masks.refiner) and the token mask model (mole.masks.system, via `prior_logits`)
start from these scores standardised per tensor and learn a correction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mole.data import TaskData
from mole.errors import ConfigError, check_int
from mole.masks.layers import (
    activate,
    jacobian_targets,
    last_conv,
    layers_of,
    pre_activation,
    rows,
    start,
    votes,
)
from mole.nets import Architecture, Params
from mole.zoo.pruning import Masks, check_sparsity, masks_from_scores, topk_straight_through

DEFAULTS = {"weight": 1.0, "ridge": 0.3, "passes": 3, "inputs": 2048}


def check_prior(prior: dict | None, field: str = "model.mask_prior") -> dict | None:
    """The prior's options over DEFAULTS, validated; None stays None (no prior)."""
    if prior is None:
        return None
    if not isinstance(prior, dict):
        raise ConfigError(field, f"must be a mapping of {', '.join(DEFAULTS)} or null, got {prior!r}")
    unknown = set(prior) - set(DEFAULTS)
    if unknown:
        raise ConfigError(field, f"unknown option(s) {sorted(unknown)}; valid: {', '.join(DEFAULTS)}")
    out = {**DEFAULTS, **prior}
    for key in ("weight", "ridge"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ConfigError(f"{field}.{key}", f"must be a number > 0, got {v!r}")
    for key in ("passes", "inputs"):
        check_int(out[key], f"{field}.{key}")
    return {k: (float(v) if k in ("weight", "ridge") else int(v)) for k, v in out.items()}


def least_squares_scores(
    arch: Architecture,
    init: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    sparsity: torch.Tensor,
    ridge: float = DEFAULTS["ridge"],
    passes: int = DEFAULTS["passes"],
) -> Params:
    """Per-weight scores {weight name: (B, *shape)} whose top (1 - sparsity) per tensor is the mask.

    A ConfigError for architectures other than "mlp" and "cnn".

    Args:
        arch: an "mlp" or "cnn" architecture.
        init: the frozen weights, stacked {name: (B, *shape)} (biases are used as given).
        x: (N, ...) training inputs.
        y: (N,) their labels.
        sparsity: (B,) fraction of each weight tensor removed.
        ridge: lambda, relative to the mean diagonal of H^T H / N.
        passes: construction passes (the votes of pass p go through pass p-1's masks).
    """
    layers = layers_of(arch)
    weights = [init[la.weight].detach().float() for la in layers]  # (B, out, in) or (B, O, C, *kernel)
    b = weights[0].shape[0]
    target = F.one_hot(y.long(), arch.num_classes).float()  # (N, C)
    masks = [torch.ones_like(w) for w in weights]
    scores: list[torch.Tensor] = []
    for _ in range(passes):
        h = start(arch, x, b)  # (B, N, in) or (B, N, C, *S)
        scores = []
        for i, (layer, w) in enumerate(zip(layers, weights)):
            r = rows(layer, h)  # (B, N, P, fan_in)
            hm = r.reshape(b, -1, r.shape[-1])  # (B, N*P, fan_in): one row per example and position
            masked = [v * m for v, m in zip(weights, masks)]
            bias = init[layer.bias].detach().float()
            if layer.conv:  # what each unit should output, per example and position: (B, N*P, O)
                z = pre_activation(layer, h, masked[i], bias)  # (B, N, O, *S), the previous pass's mask
                biases = [init[la.bias].detach().float() for la in layers]
                t = jacobian_targets(layers, i, z, masked, biases, target).flatten(3).transpose(2, 3)
                t = t.reshape(b, hm.shape[1], -1)
            else:
                t = target @ votes(masked, i)  # (B, N, out)
            hc = hm - hm.mean(1, keepdim=True)
            tc = t - t.mean(1, keepdim=True)
            gram = hc.transpose(1, 2) @ hc / hm.shape[1]  # (B, fan_in, fan_in)
            lam = ridge * gram.diagonal(dim1=1, dim2=2).mean(1).clamp(min=1e-12)  # (B,)
            eye = torch.eye(gram.shape[1], device=gram.device)
            beta = torch.linalg.solve(gram + lam[:, None, None] * eye, hc.transpose(1, 2) @ tc / hm.shape[1])
            score = (w.flatten(2) * beta.transpose(1, 2)).view_as(w)  # (B, out, fan_in) -> w's shape
            scores.append(score)
            masks[i] = topk_straight_through(score, sparsity).detach()
            h = activate(layer, pre_activation(layer, h, w * masks[i], bias), last_conv(layers, i))
    return {la.weight: s for la, s in zip(layers, scores)}


def standardized(scores: Params) -> Params:
    """Each net's tensor of scores divided by its standard deviation (ranks kept, scale common).
    Zeros (weights of inputs that never vary) come out as +0.0: top-k sorts may order -0.0 first."""
    return {
        n: s / s.flatten(1).std(1).clamp(min=1e-12).view(-1, *[1] * (s.dim() - 1)) + 0.0
        for n, s in scores.items()
    }


def prior_data(data: TaskData, inputs: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): `inputs` training examples of the task (all when it has fewer), drawn with `seed`;
    training and sampling draw the same ones."""
    return data.train_sample(inputs, seed)


def prior_logits(
    arch: Architecture, init: Params, sparsity: torch.Tensor, x: torch.Tensor, y: torch.Tensor, prior: dict
) -> Params:
    """The prior's share of the mask logits: prior["weight"] * the standardised least-squares scores."""
    scores = least_squares_scores(arch, init, x, y, sparsity, prior["ridge"], prior["passes"])
    return {n: prior["weight"] * s for n, s in standardized(scores).items()}


def least_squares_masks(
    arch: Architecture,
    init: Params,
    data: TaskData,
    sparsity: float,
    inputs: int = DEFAULTS["inputs"],
    ridge: float = DEFAULTS["ridge"],
    passes: int = DEFAULTS["passes"],
) -> Masks:
    """The construction on its own: keep-masks {weight name: (B, *shape) bool} of frozen inits,
    exactly round(sparsity * n) of each weight tensor removed (layer-wise, as edge-popup).

    Args:
        arch: an "mlp" or "cnn" architecture.
        init: the frozen weights, stacked {name: (B, *shape)}.
        data: the task; `inputs` of its training examples (drawn as `prior_data` draws them) fit it.
        sparsity: fraction of each weight tensor removed, in [0, 1).
        inputs, ridge, passes: the construction's options (DEFAULTS).
    """
    sparsity = check_sparsity(sparsity, "sparsity")
    x, y = prior_data(data, inputs)
    b = next(iter(init.values())).shape[0]
    scores = least_squares_scores(arch, init, x, y, torch.full((b,), float(sparsity)), ridge, passes)
    return masks_from_scores(scores, sparsity, "layerwise")
