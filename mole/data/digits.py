"""scikit-learn's bundled 8x8 handwritten digits: the embedded default task (no download)."""

from __future__ import annotations

import torch

from mole.data.base import TaskData, split_indices
from mole.errors import ConfigError


def load_digits_task(
    split_seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.25
) -> TaskData:
    """Load digits, scale pixels from 0..16 to [0, 1] and split with a fixed seed.

    Args:
        split_seed: seed of the train/val/test permutation (fixed, independent of member seeds).
        val_fraction: share of the 1797 images held out for validation.
        test_fraction: share held out for testing.
    """
    from sklearn.datasets import load_digits

    if not 0 < val_fraction + test_fraction < 1:
        raise ConfigError(
            "task_options",
            f"val_fraction + test_fraction must be in (0, 1), got {val_fraction + test_fraction}",
        )
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    tr, va, te = split_indices(len(y), val_fraction, test_fraction, split_seed)
    return TaskData("digits", x[tr], y[tr], x[va], y[va], x[te], y[te], num_classes=10)
