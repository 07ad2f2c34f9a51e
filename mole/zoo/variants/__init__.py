"""Variants (VARIANTS): one file each, one interface (mole.zoo.variants.base.Variant)."""

from __future__ import annotations

from mole.errors import ConfigError
from mole.registry import Registry
from mole.zoo.variants.base import GroupContext, Record, Variant
from mole.zoo.variants.dense import Dense
from mole.zoo.variants.imp import IMP
from mole.zoo.variants.lowrank import LowRank
from mole.zoo.variants.magnitude import Magnitude
from mole.zoo.variants.neuron_pruned import NeuronPruned
from mole.zoo.variants.quantized import Quantized
from mole.zoo.variants.random_prune import RandomPrune
from mole.zoo.variants.supermask import Supermask

VARIANTS: Registry[type[Variant]] = Registry("variant")
VARIANTS.register("dense")(Dense)
VARIANTS.register("quantized")(Quantized)
VARIANTS.register("lowrank")(LowRank)
VARIANTS.register("magnitude")(Magnitude)
VARIANTS.register("imp")(IMP)
VARIANTS.register("random_prune")(RandomPrune)
VARIANTS.register("supermask")(Supermask)
VARIANTS.register("neuron_pruned")(NeuronPruned)


def build_variant(name: str, options: dict, field: str = "variants") -> Variant:
    cls = VARIANTS.get(name, field=f"{field}.name")
    try:
        return cls(**options)
    except TypeError as e:
        raise ConfigError(f"{field}.options", f"{name}: {e}") from None


__all__ = ["VARIANTS", "GroupContext", "Record", "Variant", "build_variant"]
