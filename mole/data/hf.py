"""MNIST, Fashion-MNIST and CIFAR-10 through Hugging Face `datasets` (hub name or local files)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mole.data.base import TaskData, split_indices
from mole.errors import ConfigError

_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json"}


@dataclass(frozen=True)
class HFImageSource:
    """Where a Hugging Face image-classification set lives and what its columns are called."""

    name: str
    hub_name: str
    image_column: str
    label_column: str
    num_classes: int


def _builder_for(data_files: str | list[str] | dict) -> str:
    if isinstance(data_files, dict):
        files = [f for v in data_files.values() for f in ([v] if isinstance(v, str) else v)]
    else:
        files = [data_files] if isinstance(data_files, str) else list(data_files)
    suffixes = {Path(f).suffix for f in files}
    if len(suffixes) != 1 or next(iter(suffixes)) not in _BUILDERS:
        raise ConfigError(
            "task_options.data_files",
            f"need files of one type among {sorted(_BUILDERS)}, got {sorted(suffixes)}",
        )
    return _BUILDERS[suffixes.pop()]


def _to_tensors(split, source: HFImageSource) -> tuple[torch.Tensor, torch.Tensor]:
    for col in (source.image_column, source.label_column):
        if col not in split.column_names:
            raise ConfigError(
                "task_options", f"{source.name}: column {col!r} missing; columns are {split.column_names}"
            )
    table = split.with_format("numpy")
    images = np.stack([np.asarray(im) for im in table[source.image_column]])
    if images.ndim == 3:  # (N, H, W) grey -> (N, 1, H, W)
        images = images[:, None]
    elif images.ndim == 4:  # (N, H, W, C) -> (N, C, H, W)
        images = images.transpose(0, 3, 1, 2)
    else:
        raise ConfigError("task_options", f"{source.name}: images of shape {images.shape[1:]} are not 2-D")
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    y = torch.from_numpy(np.asarray(table[source.label_column])).long()
    return x, y


def load_hf_task(
    source: HFImageSource,
    path: str | None = None,
    data_files: str | list[str] | dict | None = None,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    split_seed: int = 0,
    val_fraction: float = 0.1,
    max_train: int | None = None,
) -> TaskData:
    """Load a task through `datasets.load_dataset`; val is carved from train with a fixed seed.

    Args:
        source: the task's hub name and column names.
        path: a hub name or local folder; defaults to the task's hub name.
        data_files: local files (a path, a list, or {"train": ..., "test": ...}); take precedence over path.
        data_dir: a local folder holding the split files.
        cache_dir: where `datasets` keeps its Arrow cache.
        split_seed: seed of the val split carved from train (and of test, when the source has none).
        val_fraction: share of train held out for validation.
        max_train: keep only the first N training images after shuffling (for quick sweeps).
    """
    import datasets

    if data_files is not None:
        ds = datasets.load_dataset(_builder_for(data_files), data_files=data_files, cache_dir=cache_dir)
    else:
        ds = datasets.load_dataset(path or source.hub_name, data_dir=data_dir, cache_dir=cache_dir)
    if "train" not in ds:
        raise ConfigError("task_options", f"{source.name}: no 'train' split; found {list(ds)}")
    x, y = _to_tensors(ds["train"], source)
    if "test" in ds:
        x_test, y_test = _to_tensors(ds["test"], source)
        tr, va, _ = split_indices(len(y), val_fraction, 0.0, split_seed)
    else:
        tr, va, te = split_indices(len(y), val_fraction, 0.2, split_seed)
        x_test, y_test = x[te], y[te]
    if max_train is not None:
        tr = tr[:max_train]
    return TaskData(source.name, x[tr], y[tr], x[va], y[va], x_test, y_test, num_classes=source.num_classes)
