"""MNIST-1D (Greydanus 2020): 1-D digit signals made by the `mnist1d` package's generator (no download)."""

from __future__ import annotations

import random

import numpy as np
import torch

from mole.data.base import TaskData, split_indices
from mole.errors import ConfigError

CLASSES = 10


def load_mnist1d_task(
    num_samples: int = 5000, seed: int = 42, split_seed: int = 0, val_fraction: float = 0.1
) -> TaskData:
    """Generate MNIST-1D procedurally and split it; signals are (N, 1, 40), standardised by the generator.

    The generator's own train / test cut (80 / 20, the published benchmark's) is kept; validation is
    carved from its training part with a fixed seed. Only `make_dataset` is called: the package's
    `get_dataset` downloads a pickle, which mole never does.

    Args:
        num_samples: signals generated, a multiple of the 10 classes (5000 is the published set).
        seed: the generator's seed (42 is the published set's).
        split_seed: seed of the validation split carved from the generator's training part.
        val_fraction: share of the training part held out for validation.
    """
    if not _is_int(num_samples) or num_samples < 10 * CLASSES or num_samples % CLASSES:
        raise ConfigError(
            "task_options.num_samples",
            f"must be a multiple of {CLASSES} and >= {10 * CLASSES}, got {num_samples!r}",
        )
    if not _is_int(seed) or seed < 0:
        raise ConfigError("task_options.seed", f"must be an integer >= 0, got {seed!r}")
    if not 0 < val_fraction < 1:
        raise ConfigError("task_options.val_fraction", f"must be in (0, 1), got {val_fraction!r}")
    # Imported here, like digits' scikit-learn: the package imports matplotlib.pyplot and requests.
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    # make_dataset seeds and draws from the global `random` / `np.random` states: restore them after,
    # so loading the task changes no other draw in the process.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        raw = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x = torch.from_numpy(np.ascontiguousarray(raw["x"], dtype=np.float32)).unsqueeze(1)  # (N, 1, 40)
    y = torch.from_numpy(np.asarray(raw["y"], dtype=np.int64))
    x_test = torch.from_numpy(np.ascontiguousarray(raw["x_test"], dtype=np.float32)).unsqueeze(1)
    y_test = torch.from_numpy(np.asarray(raw["y_test"], dtype=np.int64))
    tr, va, _ = split_indices(len(y), val_fraction, 0.0, split_seed)
    return TaskData("mnist1d", x[tr], y[tr], x[va], y[va], x_test, y_test, num_classes=CLASSES)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
