"""Multi-layer perceptron with configurable hidden widths."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mole.errors import ConfigError
from mole.nets.base import Architecture, Params
from mole.nets.functional import stacked_linear


class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU] * len(hidden) -> Linear."""

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int):
        super().__init__()
        widths = [in_features, *hidden, num_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


class MLPArchitecture(Architecture):
    """MLP over the flattened input.

    Args:
        hidden: hidden-layer widths, e.g. [32, 32].
    """

    name = "mlp"

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (32, 32)):
        super().__init__(input_shape, num_classes)
        if not hidden or any(int(h) <= 0 for h in hidden):
            raise ConfigError("arch_options.hidden", f"need one or more positive widths, got {list(hidden)}")
        self.hidden = [int(h) for h in hidden]
        self.in_features = math.prod(self.input_shape)

    def options(self) -> dict:
        return {"hidden": list(self.hidden)}

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        widths = [self.in_features, *self.hidden, self.num_classes]
        shapes = {}
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            shapes[f"layers.{i}.weight"] = (b, a)
            shapes[f"layers.{i}.bias"] = (b,)
        return shapes

    def build_module(self) -> nn.Module:
        return MLP(self.in_features, self.hidden, self.num_classes)

    def forward_stacked(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(-len(self.input_shape))  # (B, in) or (K, B, in)
        n = len(self.hidden) + 1
        for i in range(n):
            h = stacked_linear(h, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"])  # (K, B, out)
            if i < n - 1:
                h = F.relu(h)
        return h
