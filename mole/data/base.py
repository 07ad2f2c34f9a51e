"""A task is a fixed train/val/test split of a classification data set, held as tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TaskData:
    """Whole splits in memory: stacked training indexes them with per-member permutations.

    Inputs are float32, images in [0, 1] shaped (N, C, H, W) or 1-D signals shaped (N, C, L); labels
    are int64 (N,). Architectures read the layout from `input_shape`.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])  # (C, H, W) or (C, L)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; valid: train, val, test")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def train_sample(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y): n training examples (all when there are fewer) in a seeded random order."""
        pick = torch.randperm(len(self.x_train), generator=torch.Generator().manual_seed(seed))[:n]
        return self.x_train[pick], self.y_train[pick]

    def to(self, device: torch.device | str) -> TaskData:
        moved = {
            k: getattr(self, k).to(device)
            for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
        }
        return TaskData(name=self.name, num_classes=self.num_classes, **moved)


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[torch.Tensor, ...]:
    """A seeded permutation of range(n) cut into (train, val, test) index tensors."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]
