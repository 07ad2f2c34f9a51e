import pytest

from mole.data import TASKS
from mole.errors import ConfigError
from mole.nets import ARCHITECTURES
from mole.registry import Registry
from mole.zoo.variants import VARIANTS


def test_unknown_name_lists_valid_ones():
    reg = Registry("widget")
    reg.register("b")(1)
    reg.register("a")(2)
    with pytest.raises(ConfigError, match=r"unknown widget 'c'; valid: a, b"):
        reg.get("c")
    assert reg.get("a") == 2 and list(reg) == ["a", "b"]


def test_double_registration_is_refused():
    reg = Registry("widget")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(2)


def test_builtin_registries():
    assert {"digits", "mnist", "fashion_mnist", "cifar10"} <= set(TASKS.names())
    assert {"mlp", "cnn"} <= set(ARCHITECTURES.names())
    assert "dense" in VARIANTS
