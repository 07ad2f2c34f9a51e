"""A tiny mixed zoo for the one-denoiser tests: three zoo folders of two architectures, four shapes
and two tasks (an MLP on digits with narrower neuron_pruned members, a CNN on digits, a deeper MLP on
mnist1d), built once per test session; and a tiny model trained on any of them."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from mole.diffusion.conditioning import model_args
from mole.diffusion.datamodule import ZooDataModule
from mole.diffusion.denoiser import Denoiser
from mole.diffusion.function_loss import PerCell
from mole.diffusion.model_dir import export_model
from mole.diffusion.system import DiffusionSystem
from mole.zoo.build import build_zoo
from mole.zoo.spec import ZooSpec
from tests.conftest import TINY_ZOO

TINY = {"width": 32, "depth": 1, "heads": 2}
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


def train_tiny(zoo, out: Path, steps: int = 12, function_loss: float = 0.0) -> Path:
    """A tiny denoiser (1 block, width 32) trained `steps` steps at batch 16 through the training side's
    API, on a zoo folder or on a list of them read together (a mixed zoo: `function_loss` > 0 scores
    each row with its own cell); its exported model folder (out/model)."""
    torch.manual_seed(0)
    zoo = str(zoo) if isinstance(zoo, (str, Path)) else [str(z) for z in zoo]
    dm = ZooDataModule(zoo, batch_size=16, fractions=(1.0, 0.0, 0.0), cache_dir=str(out / "cache"))
    system = DiffusionSystem(
        Denoiser(**model_args(dm), **TINY),
        prediction_type="sample",
        ema_decay=0.9,
        function_loss=function_loss,
    )
    if function_loss:
        system.function = PerCell.from_datamodule(dm, 16)
    opt = system.configure_optimizers()["optimizer"]
    batches = iter(())
    for _ in range(steps):
        batch = next(batches, None) or next(batches := iter(dm.train_dataloader()))
        loss = system.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        system.ema.update_parameters(system.net)
    return export_model(system, dm, out / "model")


def train_mixed(zoos: list[Path], out: Path) -> Path:
    """train_tiny on `zoos` read together, for one epoch of MIXED_ZOOS (44 rows: 3 steps), the
    function-space term on."""
    return train_tiny(zoos, out, steps=3, function_loss=1.0)
