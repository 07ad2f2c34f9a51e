"""Variants (VARIANTS): one file each, one interface (mole.zoo.variants.base.Variant)."""

from __future__ import annotations

from mole.errors import ConfigError
from mole.registry import Registry
from mole.zoo.variants.base import GroupContext, Record, Variant
from mole.zoo.variants.dense import Dense

VARIANTS: Registry[type[Variant]] = Registry("variant")
VARIANTS.register("dense")(Dense)


def build_variant(name: str, options: dict, field: str = "variants") -> Variant:
    cls = VARIANTS.get(name, field=f"{field}.name")
    try:
        return cls(**options)
    except TypeError as e:
        raise ConfigError(f"{field}.options", f"{name}: {e}") from None


__all__ = ["VARIANTS", "GroupContext", "Record", "Variant", "build_variant"]
