"""A small LeNet-like CNN: [conv -> ReLU -> 2x2 max-pool] * len(channels) -> MLP head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mole.errors import ConfigError
from mole.nets.base import Architecture, Params
from mole.nets.functional import members_to_channels, stacked_conv2d, stacked_linear


class CNN(nn.Module):
    """LeNet-like: conv blocks (same padding, max-pool 2) then fully connected layers."""

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        kernel_size: int,
        flat: int,
        hidden: Sequence[int],
        num_classes: int,
    ):
        super().__init__()
        cs = [in_channels, *channels]
        self.padding = kernel_size // 2
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, kernel_size, padding=self.padding) for a, b in zip(cs[:-1], cs[1:])
        )
        widths = [flat, *hidden, num_classes]
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.max_pool2d(F.relu(conv(x)), 2)
        x = x.flatten(1)
        for fc in self.fcs[:-1]:
            x = F.relu(fc(x))
        return self.fcs[-1](x)


class CNNArchitecture(Architecture):
    """Small CNN.

    Args:
        channels: output channels of each conv block, e.g. [8, 16].
        kernel_size: odd square kernel size (same padding).
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
        c, h, w = self.input_shape
        for _ in channels:
            h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise ConfigError(
                "arch_options.channels",
                f"{len(channels)} pooling blocks shrink a {self.input_shape[1:]} input to nothing",
            )
        self.channels, self.kernel_size, self.hidden = (
            [int(c) for c in channels],
            int(kernel_size),
            [int(x) for x in hidden],
        )
        self.flat = self.channels[-1] * h * w

    def options(self) -> dict:
        return {"channels": list(self.channels), "kernel_size": self.kernel_size, "hidden": list(self.hidden)}

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {}
        cs = [self.input_shape[0], *self.channels]
        for i, (a, b) in enumerate(zip(cs[:-1], cs[1:])):
            shapes[f"convs.{i}.weight"] = (b, a, self.kernel_size, self.kernel_size)
            shapes[f"convs.{i}.bias"] = (b,)
        widths = [self.flat, *self.hidden, self.num_classes]
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            shapes[f"fcs.{i}.weight"] = (b, a)
            shapes[f"fcs.{i}.bias"] = (b,)
        return shapes

    def build_module(self) -> nn.Module:
        return CNN(
            self.input_shape[0], self.channels, self.kernel_size, self.flat, self.hidden, self.num_classes
        )

    def forward_stacked(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        k = params["convs.0.weight"].shape[0]
        h = members_to_channels(x) if x.dim() == 5 else x  # (B, K*C, H, W) or shared (B, C, H, W)
        for i in range(len(self.channels)):
            h = stacked_conv2d(
                h, params[f"convs.{i}.weight"], params[f"convs.{i}.bias"], self.kernel_size // 2
            )
            h = F.max_pool2d(F.relu(h), 2)  # (B, K*O, H/2, W/2)
        h = rearrange(h, "b (k c) h w -> k b (c h w)", k=k)  # same flatten order as the module's
        n = len(self.hidden) + 1
        for i in range(n):
            h = stacked_linear(h, params[f"fcs.{i}.weight"], params[f"fcs.{i}.bias"])
            if i < n - 1:
                h = F.relu(h)
        return h
