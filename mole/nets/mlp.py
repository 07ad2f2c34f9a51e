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

    @torch.no_grad()
    def loss_grads_stacked(
        self, params: Params, x: torch.Tensor, y: torch.Tensor, out: Params | None = None, beta: float = 0.0
    ) -> Params:
        """Gradient of each member's mean cross-entropy over its own batch, backpropagated by hand.

        `out = beta * out + grad` in place (the weight gradients are the beta of one batched matmul),
        so SGD's momentum buffers can be `out`: the trainer then needs no separate pass to fold each
        gradient into its buffer.

        Why by hand and not autograd: at the zoo's sizes (K=128 members of 64-32-32-10, batch 64) a
        training step is a few milliseconds, and autograd's bookkeeping, the optimizer's extra passes
        and a slow CPU softmax over 10 logits in the last dim took half of it (ledger Z21). The
        classes go along dim 1 here, where that kernel is fast. Tests pin this against autograd.

        Args:
            params: stacked parameters (K, ...).
            x: (K, B, *input_shape), one batch per member.
            y: (K, B) labels.
            out: gradients to accumulate into, as params; None allocates them (beta is then unused).
            beta: factor on `out` before the gradient is added; 0 ignores its contents.

        Returns:
            `out`, holding the gradients (or momentum-updated buffers).
        """
        k, b = y.shape
        n = len(self.hidden) + 1
        if out is None:
            out, beta = {name: torch.empty_like(p) for name, p in params.items()}, 0.0
        hs = [x.flatten(-len(self.input_shape))]  # each layer's input, (K, B, width)
        for i in range(n - 1):
            w, bias = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
            hs.append(torch.baddbmm(bias.unsqueeze(1), hs[-1], w.transpose(1, 2)).relu_())
        w, bias = params[f"layers.{n - 1}.weight"], params[f"layers.{n - 1}.bias"]
        g = torch.baddbmm(bias.unsqueeze(2), w, hs[-1].transpose(1, 2))  # logits (K, C, B)
        g = torch.softmax(g, 1)
        g.scatter_add_(1, y.unsqueeze(1), g.new_full((k, 1, b), -1.0))  # d loss / d logits, times B
        g = g.transpose(1, 2)  # (K, B, C)
        ones = g.new_ones(k, 1, b)
        for i in reversed(range(n)):
            gt = g.transpose(1, 2)  # (K, out, B)
            out[f"layers.{i}.weight"].baddbmm_(gt, hs[i], beta=beta, alpha=1.0 / b)
            out[f"layers.{i}.bias"].unsqueeze(1).baddbmm_(ones, g, beta=beta, alpha=1.0 / b)
            if i:  # relu's backward: the aten op autograd runs for it, in one pass
                g = torch.ops.aten.threshold_backward(torch.bmm(g, params[f"layers.{i}.weight"]), hs[i], 0)
        return out
