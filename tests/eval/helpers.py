"""Hand-made members for the evaluator tests: a tiny MLP, zoo rows built from MemberTensors."""

from __future__ import annotations

import json

import torch

from mole.data import TaskData
from mole.nets import build_architecture
from mole.tokenizer import MemberTensors, apply_permutation
from mole.tokenizer.canonical import hidden_links

ARCH = build_architecture("mlp", (1, 4, 4), 3, hidden=[6, 5])  # weights 6x16, 5x6, 3x5: 141 in all
WEIGHTS = ARCH.weight_names()


def member(seed: int = 0, arch=ARCH) -> MemberTensors:
    """A dense member with random params."""
    g = torch.Generator().manual_seed(seed)
    params = {n: torch.randn(s, generator=g) for n, s in arch.param_shapes().items()}
    return MemberTensors(arch.name, arch.config(), params).validate()


def only(m: MemberTensors, names: list[str]) -> MemberTensors:
    """The member with every tensor but `names` zeroed (members supported on disjoint tensors are
    orthogonal, in any neuron order)."""
    return m.replace(params={n: t if n in names else torch.zeros_like(t) for n, t in m.params.items()})


def permuted(m: MemberTensors) -> MemberTensors:
    """The same network with the neurons of every hidden layer cyclically shifted by one."""
    perms = {w: [*range(1, n), 0] for w, *_ in hidden_links(m.arch) for n in [m.params[w].shape[0]]}
    return apply_permutation(m, perms)


def row(m: MemberTensors, prompt: dict | None = None, **columns) -> dict:
    """A zoo row (mole.zoo.store.SCHEMA columns) of a member; `prompt` goes to extra["prompt"]."""
    tensors = m.to_row()
    extra = dict(columns.pop("extra", {}))
    if tensors.pop("factor_shapes") is not None:
        extra["factor_shapes"] = m.factor_shapes()
    if prompt is not None:
        extra["prompt"] = prompt
    return {
        "member_id": columns.pop("member_id", "m"),
        "variant": columns.pop("variant", "generated" if prompt is not None else "dense"),
        "step": 0,
        "final": True,
        **tensors,
        **columns,
        "extra": json.dumps(extra),
    }


def task(n_test: int = 40, seed: int = 0) -> TaskData:
    """Random images and labels shaped for ARCH (only the test split is read)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_test, *ARCH.input_shape, generator=g)
    y = torch.randint(0, ARCH.num_classes, (n_test,), generator=g)
    return TaskData("toy", x[:2], y[:2], x[:2], y[:2], x, y, ARCH.num_classes)


def logits(m: MemberTensors, x: torch.Tensor) -> torch.Tensor:
    """One member's logits through the plain nn.Module (independent of the stacked forward)."""
    with torch.no_grad():
        return m.arch.to_module(m.params)(x)
