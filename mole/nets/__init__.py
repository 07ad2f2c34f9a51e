"""Architectures (ARCHITECTURES): small networks runnable as plain modules or K members stacked."""

from __future__ import annotations

from collections.abc import Sequence

from mole.errors import ConfigError
from mole.nets.base import Architecture, Params
from mole.nets.cnn import CNNArchitecture
from mole.nets.mlp import MLPArchitecture
from mole.registry import Registry

ARCHITECTURES: Registry[type[Architecture]] = Registry("architecture")
ARCHITECTURES.register("mlp")(MLPArchitecture)
ARCHITECTURES.register("cnn")(CNNArchitecture)


def build_architecture(name: str, input_shape: Sequence[int], num_classes: int, **options) -> Architecture:
    """Instantiate architecture `name` for a task; unknown names and options raise a one-line error."""
    cls = ARCHITECTURES.get(name, field="architecture")
    try:
        return cls(input_shape, num_classes, **options)
    except TypeError as e:
        raise ConfigError("arch_options", f"{name}: {e}") from None


def architecture_from_config(name: str, config: dict) -> Architecture:
    """Rebuild an architecture from `Architecture.config()` (as stored in every zoo row)."""
    config = dict(config)
    return build_architecture(name, config.pop("input_shape"), config.pop("num_classes"), **config)


__all__ = ["ARCHITECTURES", "Architecture", "Params", "architecture_from_config", "build_architecture"]
