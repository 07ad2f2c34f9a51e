"""A small LeNet-like CNN: [conv -> ReLU -> max-pool 2] * len(channels) -> MLP head, on 1-D or 2-D inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mole.errors import ConfigError
from mole.nets.base import Architecture, Params
from mole.nets.functional import (
    POOL,
    channels_last,
    channels_to_members,
    members_to_channels,
    stacked_bias,
    stacked_conv,
    stacked_linear,
)

CONV_MODULES = {1: nn.Conv1d, 2: nn.Conv2d}  # spatial dims -> module


class CNN(nn.Module):
    """LeNet-like: conv blocks (same padding, max-pool 2) then fully connected layers.

    Args:
        dims: spatial dimensions of the input: 1 for signals (C, L), 2 for images (C, H, W).
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        kernel_size: int,
        flat: int,
        hidden: Sequence[int],
        num_classes: int,
        dims: int = 2,
    ):
        super().__init__()
        cs = [in_channels, *channels]
        self.dims = dims
        self.padding = kernel_size // 2
        conv = CONV_MODULES[dims]
        self.convs = nn.ModuleList(
            conv(a, b, kernel_size, padding=self.padding) for a, b in zip(cs[:-1], cs[1:])
        )
        widths = [flat, *hidden, num_classes]
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = POOL[self.dims](F.relu(conv(x)), 2)
        x = x.flatten(1)
        for fc in self.fcs[:-1]:
            x = F.relu(fc(x))
        return self.fcs[-1](x)


class CNNArchitecture(Architecture):
    """Small CNN; 1-D convolutions for (C, L) inputs, 2-D for (C, H, W), chosen from the input shape.

    Kernels are (out, in, k) in 1-D and (out, in, k, k) in 2-D.

    Args:
        channels: output channels of each conv block, e.g. [8, 16].
        kernel_size: odd kernel size (square in 2-D; same padding).
        hidden: widths of the hidden fully connected layers.
    """

    name = "cnn"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (8, 16),
        kernel_size: int = 3,
        hidden: Sequence[int] = (32,),
    ):
        super().__init__(input_shape, num_classes)
        if len(self.input_shape) not in (2, 3):
            raise ConfigError(
                "architecture", f"cnn needs inputs shaped (C, L) or (C, H, W), got {self.input_shape}"
            )
        if not channels or any(int(c) <= 0 for c in channels):
            raise ConfigError(
                "arch_options.channels", f"need one or more positive channel counts, got {list(channels)}"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(
                "arch_options.kernel_size", f"must be a positive odd integer, got {kernel_size}"
            )
        if any(int(h) <= 0 for h in hidden):
            raise ConfigError("arch_options.hidden", f"widths must be positive, got {list(hidden)}")
        self.dims = len(self.input_shape) - 1
        spatial = list(self.input_shape[1:])
        for _ in channels:
            spatial = [s // 2 for s in spatial]
        if min(spatial) < 1:
            raise ConfigError(
                "arch_options.channels",
                f"{len(channels)} pooling blocks shrink a {self.input_shape[1:]} input to nothing",
            )
        self.channels, self.kernel_size, self.hidden = (
            [int(c) for c in channels],
            int(kernel_size),
            [int(x) for x in hidden],
        )
        self.flat = self.channels[-1] * math.prod(spatial)

    def options(self) -> dict:
        return {"channels": list(self.channels), "kernel_size": self.kernel_size, "hidden": list(self.hidden)}

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {}
        cs = [self.input_shape[0], *self.channels]
        for i, (a, b) in enumerate(zip(cs[:-1], cs[1:])):
            shapes[f"convs.{i}.weight"] = (b, a, *[self.kernel_size] * self.dims)
            shapes[f"convs.{i}.bias"] = (b,)
        widths = [self.flat, *self.hidden, self.num_classes]
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            shapes[f"fcs.{i}.weight"] = (b, a)
            shapes[f"fcs.{i}.bias"] = (b,)
        return shapes

    def build_module(self) -> nn.Module:
        return CNN(
            self.input_shape[0],
            self.channels,
            self.kernel_size,
            self.flat,
            self.hidden,
            self.num_classes,
            self.dims,
        )

    def features_stacked(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """What enters the fully connected head: (K, B, flat), flattened as the module's flatten(1).

        Args:
            params: stacked parameters, each (K, *shape).
            x: (B, C, *S) shared by all members, or (K, B, C, *S) one batch per member.
        """
        k = params["convs.0.weight"].shape[0]
        shared = x.dim() == len(self.input_shape) + 1
        h = channels_last(x) if shared else members_to_channels(x)  # (B, C | K*C, *S)
        for i in range(len(self.channels)):
            w, b = params[f"convs.{i}.weight"], params[f"convs.{i}.bias"]
            h = stacked_conv(h, w, None, self.kernel_size // 2, shared=shared and i == 0)  # (B, K*O, *S)
            # pool, then bias and ReLU: the module's values to the bit (a per-channel bias and ReLU
            # are monotone, so they commute with the max; only where rounding makes two inputs of a
            # window tie may the gradient pick another), with the bias, its gradient's sum and the
            # ReLU on a quarter of the elements in 2-D (ledger Z22: about 13% of a step)
            h = F.relu(stacked_bias(POOL[self.dims](h, 2), b))  # (B, K*O, *S/2)
        return channels_to_members(h, k)  # (K, B, flat)

    def forward_stacked(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        h = self.features_stacked(params, x)  # (K, B, flat)
        n = len(self.hidden) + 1
        for i in range(n):
            h = stacked_linear(h, params[f"fcs.{i}.weight"], params[f"fcs.{i}.bias"])
            if i < n - 1:
                h = F.relu(h)
        return h
