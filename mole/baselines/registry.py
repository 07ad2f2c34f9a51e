"""BASELINES: baseline name -> class, and build_baseline, which instantiates one from its options."""

from __future__ import annotations

from typing import Any

from mole.baselines.base import Baseline
from mole.baselines.edge_popup import EdgePopupBaseline
from mole.baselines.imp import IMPBaseline
from mole.baselines.lsq_supermask import LsqSupermaskBaseline
from mole.baselines.magnitude import MagnitudeBaseline
from mole.baselines.random_prune import RandomBaseline
from mole.baselines.subset_sum import SubsetSumBaseline
from mole.errors import ConfigError
from mole.registry import Registry

BASELINES: Registry[type[Baseline]] = Registry("baseline")
BASELINES.register("magnitude")(MagnitudeBaseline)
BASELINES.register("random")(RandomBaseline)
BASELINES.register("imp")(IMPBaseline)
BASELINES.register("edge_popup")(EdgePopupBaseline)
BASELINES.register("subset_sum")(SubsetSumBaseline)
BASELINES.register("lsq_supermask")(LsqSupermaskBaseline)


def build_baseline(name: str, options: dict[str, Any] | None = None) -> Baseline:
    """Instantiate baseline `name`; unknown names and bad options raise a ConfigError naming the field.

    Args:
        name: a BASELINES name.
        options: keyword arguments for its class (None: its defaults).
    """
    cls = BASELINES.get(name, field="baselines")
    if options is not None and not isinstance(options, dict):
        raise ConfigError(f"baselines.{name}", f"options must be a mapping, got {options!r}")
    try:
        return cls(**(options or {}))
    except TypeError as e:
        raise ConfigError(f"baselines.{name}", str(e)) from None
