import numpy as np
import pytest
import torch

from mole.data import load_task
from mole.errors import ConfigError


def test_digits_splits(digits):
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    total = len(digits.y_train) + len(digits.y_val) + len(digits.y_test)
    assert total == 1797
    assert digits.x_train.min() >= 0 and digits.x_train.max() <= 1 and digits.x_train.max() > 0.9
    # disjoint splits: no image appears in two of them
    rows = lambda x: {tuple(r) for r in x.flatten(1).tolist()}  # noqa: E731
    assert not rows(digits.x_test) & rows(digits.x_val)
    again = load_task("digits")
    assert torch.equal(again.x_test, digits.x_test)  # the split is fixed by its seed


def test_digits_split_seed_changes_split(digits):
    other = load_task("digits", split_seed=1)
    assert not torch.equal(other.y_test, digits.y_test)


def test_train_sample_is_seeded_and_capped(digits):
    x, y = digits.train_sample(50, seed=3)
    assert x.shape == (50, *digits.input_shape) and y.shape == (50,)
    assert torch.equal(x, digits.train_sample(50, seed=3)[0])
    assert not torch.equal(x, digits.train_sample(50, seed=4)[0])
    i = (digits.x_train.flatten(1) == x[0].flatten()).all(1).nonzero()[0, 0]
    assert y[0] == digits.y_train[i]  # labels stay with their images
    assert len(digits.train_sample(10**6)[0]) == len(digits.x_train)


def test_unknown_task_option():
    with pytest.raises(ConfigError, match="task_options"):
        load_task("digits", nonsense=1)


def _write_parquet(path, n, shape, image_col, rng, mode):
    import datasets
    from PIL import Image

    pixels = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n)
    feats = datasets.Features({image_col: datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    ds = datasets.Dataset.from_dict(
        {image_col: [Image.fromarray(p, mode=mode) for p in pixels], "label": labels.tolist()}, features=feats
    )
    ds.to_parquet(str(path))
    return pixels, labels


def test_mnist_loader_reads_local_parquet(tmp_path):
    rng = np.random.default_rng(0)
    train_px, train_y = _write_parquet(tmp_path / "train.parquet", 40, (28, 28), "image", rng, "L")
    test_px, test_y = _write_parquet(tmp_path / "test.parquet", 12, (28, 28), "image", rng, "L")
    task = load_task(
        "mnist",
        data_files={"train": str(tmp_path / "train.parquet"), "test": str(tmp_path / "test.parquet")},
        cache_dir=str(tmp_path / "cache"),
        val_fraction=0.25,
    )
    assert task.input_shape == (1, 28, 28)
    assert len(task.y_train) == 30 and len(task.y_val) == 10 and len(task.y_test) == 12
    assert torch.equal(task.x_test[:, 0], torch.from_numpy(test_px).float() / 255)
    assert task.y_test.tolist() == test_y.tolist()
    # train + val are a permutation of the training file
    got = sorted(torch.cat([task.y_train, task.y_val]).tolist())
    assert got == sorted(train_y.tolist())


def test_cifar_loader_reads_local_folder(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "data").mkdir()
    px, _ = _write_parquet(tmp_path / "data" / "train.parquet", 20, (32, 32, 3), "img", rng, "RGB")
    task = load_task(
        "cifar10", path=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), val_fraction=0.1
    )
    assert task.input_shape == (3, 32, 32)
    assert len(task.y_train) + len(task.y_val) + len(task.y_test) == 20  # no test file: carved from train


def test_loader_names_missing_column(tmp_path):
    rng = np.random.default_rng(2)
    _write_parquet(tmp_path / "train.parquet", 8, (28, 28), "picture", rng, "L")
    with pytest.raises(ConfigError, match="column 'image' missing"):
        load_task(
            "mnist", data_files={"train": str(tmp_path / "train.parquet")}, cache_dir=str(tmp_path / "c")
        )
