"""A tiny supermask zoo and its rows, for the mask tests (and `mole train`'s)."""

from __future__ import annotations

from pathlib import Path

from mole.diffusion.conditioning import model_args
from mole.diffusion.datamodule import ZooDataModule, collate
from mole.zoo.build import build_zoo
from mole.zoo.spec import ZooSpec
from tests.conftest import TINY_ZOO

TINY = {"width": 32, "depth": 1, "heads": 2}


def build_mask_zoo(out: Path) -> Path:
    """4 tiny MLP members, each dense and as an edge-popup supermask at 50% over a frozen init."""
    spec = {
        **TINY_ZOO,
        "name": "tiny-slth",
        "members": 4,
        "variants": ["dense", {"name": "supermask", "options": {"sparsity": 0.5}}],
    }
    build_zoo(ZooSpec.from_dict(spec), out, progress=False)
    return out


def mask_rows(mask_zoo, cache) -> tuple[ZooDataModule, dict, dict]:
    """The mask zoo's set-up datamodule (every member in train), its model args and its 4 supermask
    rows as one batch."""
    dm = ZooDataModule(str(mask_zoo), target="mask", fractions=(1.0, 0.0, 0.0), cache_dir=cache)
    dm.setup()
    ds = dm.datasets["train"]
    return dm, model_args(dm), collate([ds[i] for i in range(len(ds))])
