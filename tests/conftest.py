"""Tiny configs shared by the tests. Everything runs on CPU, offline, with W&B disabled."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

# One intra-op thread per process (subprocesses inherit it): the test nets are tiny, and two OpenMP
# threads per process on a 2-core machine that also runs DDP peers or builds slow steps down ~10x.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

TINY_ZOO = {
    "name": "tiny",
    "task": "digits",
    "architecture": "mlp",
    "arch_options": {"hidden": [16]},
    "variants": ["dense"],
    "members": 6,
    "group_size": 4,
    "seed": 3,
    "hparams": {
        "lr": {"low": 0.02, "high": 0.2, "log": True},
        "init_scale": [0.5, 1.0],
        "batch_size": [64],
        "epochs": [2],
    },
    "snapshots": {"every": 10},
}


def write_spec(path: Path, **overrides) -> Path:
    """Write TINY_ZOO (with top-level overrides) as YAML and return its path."""
    spec = {**TINY_ZOO, **overrides}
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def tiny_spec_path(tmp_path: Path) -> Path:
    return write_spec(tmp_path / "tiny.yaml")


@pytest.fixture(scope="session")
def digits():
    from mole.data import load_task

    return load_task("digits")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    import torch

    torch.set_num_threads(1)  # in case torch was imported before OMP_NUM_THREADS was set
