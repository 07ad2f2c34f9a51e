"""A tiny mixed zoo for the one-denoiser tests: three zoo folders of two architectures, three shapes
and two tasks (an MLP on digits with narrower neuron_pruned members, a CNN on digits, a deeper MLP on
mnist1d), built once per test session."""

from __future__ import annotations

import functools
from pathlib import Path

from mole.zoo.build import build_zoo
from mole.zoo.spec import ZooSpec
from tests.conftest import TINY_ZOO

FEW = {**TINY_ZOO["hparams"], "epochs": [1]}
MIXED_ZOOS = {
    "digits_mlp": {
        **TINY_ZOO, "name": "mixed-digits-mlp", "members": 4,
        "variants": ["dense", {"name": "neuron_pruned", "options": {"width_fraction": [0.5], "samples": 64}}],
    },
    "digits_cnn": {
        **TINY_ZOO, "name": "mixed-digits-cnn", "members": 4, "hparams": FEW, "architecture": "cnn",
        "arch_options": {"channels": [2], "kernel_size": 3, "hidden": [4]},
    },
    "mnist1d_mlp": {
        **TINY_ZOO, "name": "mixed-mnist1d-mlp", "members": 4, "hparams": FEW, "task": "mnist1d",
        "task_options": {"num_samples": 500}, "arch_options": {"hidden": [8, 8]},
    },
}  # fmt: skip


@functools.lru_cache(maxsize=1)
def _build(root: str) -> tuple[Path, ...]:
    out = []
    for key, spec in MIXED_ZOOS.items():
        out.append(Path(root) / key)
        build_zoo(ZooSpec.from_dict(spec), out[-1], progress=False)
    return tuple(out)


def mixed_zoos(tmp_path_factory) -> list[Path]:
    """The three zoo folders of MIXED_ZOOS (built once per session)."""
    return list(_build(str(tmp_path_factory.getbasetemp() / "mixed-zoos")))
