"""Tasks (TASKS): classification data sets (images, 1-D signals) held as fixed train/val/test tensors."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from mole.data.base import TaskData
from mole.data.digits import load_digits_task
from mole.data.hf import HFImageSource, load_hf_task
from mole.data.mnist1d import load_mnist1d_task
from mole.errors import ConfigError
from mole.registry import Registry

TASKS: Registry[Callable[..., TaskData]] = Registry("task")
TASKS.register("digits")(load_digits_task)
TASKS.register("mnist1d")(load_mnist1d_task)
TASKS.register("mnist")(partial(load_hf_task, HFImageSource("mnist", "ylecun/mnist", "image", "label", 10)))
TASKS.register("fashion_mnist")(
    partial(
        load_hf_task, HFImageSource("fashion_mnist", "zalando-datasets/fashion_mnist", "image", "label", 10)
    )
)
TASKS.register("cifar10")(
    partial(load_hf_task, HFImageSource("cifar10", "uoft-cs/cifar10", "img", "label", 10))
)


def load_task(name: str, **options) -> TaskData:
    """Build task `name` with its options; unknown names and options raise a one-line error."""
    factory = TASKS.get(name, field="task")
    try:
        return factory(**options)
    except TypeError as e:  # an option the loader does not take
        raise ConfigError("task_options", str(e)) from None


__all__ = ["TASKS", "TaskData", "load_task"]
