"""The layer walk of the mask construction: every weight tensor of an MLP or CNN as a linear map on rows.

The construction (mole.masks.construction) regresses what a layer's units should output on what they
receive, so it needs each layer's input as a matrix with one row per (example, position) and one
column per weight of an output unit: a dense layer's input vector, or a convolution's unfolded patch
(`F.unfold`, in the order of `weight.flatten(2)`). Running the layers here, from patches, rather than
through `Architecture.forward_stacked`, gives those matrices; tests check that the two agree.

Only the architectures' public shape attributes are read (hidden; channels, kernel_size, dims).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mole.errors import ConfigError
from mole.nets import Architecture, Params

POOLS = {1: F.max_pool1d, 2: F.max_pool2d}  # spatial dims -> max-pool


@dataclass(frozen=True)
class Layer:
    """One weight tensor's layer.

    Args:
        weight, bias: parameter names.
        conv: a convolution (same padding) followed by ReLU and 2x max-pool; else a dense layer.
        dims: a convolution's spatial dimensions (1 or 2).
        kernel: a convolution's kernel size.
        relu: a dense layer followed by ReLU (all but the last).
    """

    weight: str
    bias: str
    conv: bool = False
    dims: int = 0
    kernel: int = 1
    relu: bool = True


def layers_of(arch: Architecture) -> list[Layer]:
    """The layers of an "mlp" or "cnn" architecture, input first."""
    names = arch.weight_names()
    bias = [n.rsplit(".", 1)[0] + ".bias" for n in names]
    if arch.name == "mlp":
        return [Layer(w, b, relu=i < len(names) - 1) for i, (w, b) in enumerate(zip(names, bias))]
    if arch.name == "cnn":
        convs = len(arch.channels)
        return [
            Layer(w, b, conv=i < convs, dims=arch.dims, kernel=arch.kernel_size, relu=i < len(names) - 1)
            for i, (w, b) in enumerate(zip(names, bias))
        ]
    raise ConfigError("architecture", f"the mask construction handles mlp and cnn, not {arch.name!r}")


def start(arch: Architecture, x: torch.Tensor, k: int) -> torch.Tensor:
    """The first layer's input for K members: (K, N, in) for an MLP, (K, N, C, *S) for a CNN."""
    h = x.float().flatten(1) if arch.name == "mlp" else x.float()
    return h.expand(k, *h.shape)


def rows(layer: Layer, h: torch.Tensor) -> torch.Tensor:
    """(K, N, P, fan_in): the layer's input per example and output position (P = 1 for a dense layer).

    Args:
        layer: the layer.
        h: its input, (K, N, in) or (K, N, C, *S).
    """
    if not layer.conv:
        return h.unsqueeze(2)  # (K, N, 1, in)
    k, n = h.shape[:2]
    flat = h.reshape(k * n, *h.shape[2:])  # (K*N, C, *S)
    if layer.dims == 1:  # unfold is 2-D only: a signal is a 1-row image
        flat, size, pad = flat.unsqueeze(2), (1, layer.kernel), (0, layer.kernel // 2)
    else:
        size, pad = layer.kernel, layer.kernel // 2
    patches = F.unfold(flat, size, padding=pad)  # (K*N, C*k^d, P), columns in weight.flatten(2)'s order
    return patches.transpose(1, 2).reshape(k, n, patches.shape[2], patches.shape[1])


def pre_activation(
    layer: Layer, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """The layer's output before its nonlinearity: (K, N, out) or (K, N, O, *S).

    Args:
        layer: the layer.
        h: its input, (K, N, in) or (K, N, C, *S).
        weight: (K, out, in) or (K, O, C, *kernel), already masked.
        bias: (K, out) or None (no bias).
    """
    if not layer.conv:
        out = h @ weight.transpose(1, 2)  # (K, N, out)
        return out if bias is None else out + bias[:, None, :]
    r = rows(layer, h)  # (K, N, P, C*k^d)
    k, n, p = r.shape[:3]
    out = (r.reshape(k, n * p, -1) @ weight.flatten(2).transpose(1, 2)).reshape(k, n, p, -1)  # (K, N, P, O)
    out = out.transpose(2, 3).reshape(k, n, -1, *h.shape[3:])  # (K, N, O, *S): same padding keeps S
    return out if bias is None else out + bias.view(k, 1, -1, *[1] * layer.dims)


def activate(layer: Layer, out: torch.Tensor, last_conv: bool) -> torch.Tensor:
    """The next layer's input from a pre-activation: ReLU (and 2x max-pool after a convolution), the
    CNN's flatten after its last convolution."""
    if layer.conv:
        h = POOLS[layer.dims](F.relu(out).flatten(0, 1), 2)  # (K*N, O, *S/2)
        h = h.view(*out.shape[:2], *h.shape[1:])
        return h.flatten(2) if last_conv else h  # (K, N, O*prod(S)) as the module's flatten(1)
    return F.relu(out) if layer.relu else out


def forward(arch: Architecture, params: Params, x: torch.Tensor) -> torch.Tensor:
    """Logits (K, N, classes) of stacked `params`, layer by layer from patches (= arch.forward_stacked)."""
    layers = layers_of(arch)
    h = start(arch, x, params[layers[0].weight].shape[0])
    for i, layer in enumerate(layers):
        out = pre_activation(layer, h, params[layer.weight], params[layer.bias])
        h = activate(layer, out, last_conv(layers, i))
    return h


def last_conv(layers: list[Layer], i: int) -> bool:
    return layers[i].conv and (i + 1 == len(layers) or not layers[i + 1].conv)


def votes(weights: list[torch.Tensor], i: int) -> torch.Tensor:
    """(K, C, out_i): the class vote of each unit of dense layer i, the product of the later (masked)
    weights: d logit / d unit through the later layers made linear (no biases, no ReLU).

    Args:
        weights: every layer's masked weight, stacked (K, out, in).
        i: the layer whose units vote.
    """
    k, out = weights[i].shape[:2]
    vote = torch.eye(out, device=weights[i].device).expand(k, -1, -1)  # (K, out_i, out_i)
    for w in weights[i + 1 :]:
        vote = w @ vote  # (K, out_j, out_i) -> ends at (K, C, out_i)
    return vote


def jacobian_targets(
    layers: list[Layer],
    i: int,
    z: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    target: torch.Tensor,
) -> torch.Tensor:
    """(K, N, O, *S): per example, d (target . logits) / d z through the real later layers (their ReLU
    gates and max-pool routes at these inputs): what layer i's pre-activation `z` should move toward.

    Args:
        layers: the walk.
        i: the layer.
        z: its pre-activation (K, N, O, *S).
        weights, biases: every layer's masked weight and bias, stacked.
        target: (N, C) one-hot labels.
    """
    with torch.enable_grad():
        z = z.detach().requires_grad_()
        h = activate(layers[i], z, last_conv(layers, i))
        for j in range(i + 1, len(layers)):
            h = activate(layers[j], pre_activation(layers[j], h, weights[j], biases[j]), last_conv(layers, j))
        (grad,) = torch.autograd.grad((h * target).sum(), z)  # h: (K, N, C)
    return grad
