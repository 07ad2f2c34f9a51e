"""The Architecture interface: one network shape, run as a plain nn.Module or stacked K at once."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import nn

Params = dict[str, torch.Tensor]  # name -> tensor; stacked params carry a leading K dimension


class Architecture(ABC):
    """A network shape bound to a task's input shape and class count.

    Subclasses define `param_shapes` (in `state_dict` order), `build_module` (a plain nn.Module whose
    state_dict has exactly those names) and `forward_stacked` (all K members in one pass). Everything
    else (init, flattening, conversion to and from modules) is shared.

    Args:
        input_shape: (C, H, W) of one image or (C, L) of one 1-D signal.
        num_classes: width of the output layer.
    """

    name: str = ""

    def __init__(self, input_shape: Sequence[int], num_classes: int):
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)

    # ------------------------------------------------------------------ to define
    @abstractmethod
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Parameter names and per-member shapes, in state_dict order."""

    @abstractmethod
    def build_module(self) -> nn.Module:
        """A freshly initialised plain PyTorch module with the same parameter names and shapes."""

    @abstractmethod
    def forward_stacked(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Logits (K, B, classes) of K members.

        Args:
            params: stacked parameters, each (K, *shape).
            x: (B, *input_shape) shared by all members, or (K, B, *input_shape) one batch per member.
        """

    # An architecture may also define `loss_grads_stacked(params, x, y, out=None, beta=0.0) -> Params`:
    # the gradients of each member's mean cross-entropy without autograd (see MLPArchitecture's).
    # The stacked trainer uses it when given; None means autograd through forward_stacked.
    loss_grads_stacked = None

    @abstractmethod
    def options(self) -> dict:
        """JSON-serialisable constructor options (without input_shape / num_classes)."""

    # ------------------------------------------------------------------ shared
    def config(self) -> dict:
        """Everything needed to rebuild this architecture: input shape, classes and options."""
        return {"input_shape": list(self.input_shape), "num_classes": self.num_classes, **self.options()}

    @property
    def num_params(self) -> int:
        return sum(math.prod(s) for s in self.param_shapes().values())

    def weight_names(self) -> list[str]:
        """Names of the weight matrices / kernels (the prunable tensors); biases excluded."""
        return [n for n in self.param_shapes() if n.endswith("weight")]

    def fan_in(self, name: str) -> int:
        """Fan-in of the layer that owns parameter `name` (the bias shares its weight's)."""
        shapes = self.param_shapes()
        weight = shapes[name.rsplit(".", 1)[0] + ".weight"]
        return math.prod(weight[1:])

    def init_stacked(
        self, seeds: Sequence[int], init_scale: torch.Tensor | Sequence[float] | None = None
    ) -> Params:
        """PyTorch's default Linear/Conv init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), times a per-member scale.

        Each member draws from its own generator, so a member's init depends only on its seed.
        """
        k = len(seeds)
        scale = torch.ones(k) if init_scale is None else torch.as_tensor(init_scale, dtype=torch.float32)
        out = {name: torch.empty(k, *shape) for name, shape in self.param_shapes().items()}
        for i, seed in enumerate(seeds):
            g = torch.Generator().manual_seed(int(seed))
            for name, shape in self.param_shapes().items():
                bound = 1.0 / math.sqrt(self.fan_in(name))
                out[name][i] = (torch.rand(shape, generator=g) * 2 - 1) * bound * scale[i]
        return out

    def flatten(self, params: Params) -> torch.Tensor:
        """Stacked params -> (K, P) in param_shapes order."""
        return torch.cat([params[n].flatten(1) for n in self.param_shapes()], dim=1)

    def unflatten(self, flat: torch.Tensor) -> Params:
        """(K, P) or (P,) -> params dict (stacked if flat was 2-D)."""
        lead = flat.shape[:-1]
        if flat.shape[-1] != self.num_params:
            raise ValueError(f"{self.name}: expected {self.num_params} parameters, got {flat.shape[-1]}")
        out, i = {}, 0
        for name, shape in self.param_shapes().items():
            n = math.prod(shape)
            out[name] = flat[..., i : i + n].reshape(*lead, *shape)
            i += n
        return out

    def to_module(self, params: Params, index: int | None = None) -> nn.Module:
        """A plain nn.Module holding one member (`index` into stacked params, or unstacked params)."""
        module = self.build_module()
        state = {n: (p[index] if index is not None else p).detach().clone() for n, p in params.items()}
        module.load_state_dict(state, strict=True)
        return module

    def from_modules(self, modules: Sequence[nn.Module]) -> Params:
        """Stack the state_dicts of plain modules into (K, ...) params."""
        names = list(self.param_shapes())
        states = [m.state_dict() for m in modules]
        for s in states:
            if list(s) != names:
                raise ValueError(f"{self.name}: state_dict keys {list(s)} do not match {names}")
        return {n: torch.stack([s[n].detach() for s in states]) for n in names}
