"""Baselines (BASELINES): one file each, one interface (mole.baselines.base.Baseline): zoo rows in, zoo rows out."""

from __future__ import annotations

from mole.baselines.base import GROUP_SIZE, Baseline, Row
from mole.baselines.registry import BASELINES, build_baseline
from mole.baselines.run import run_baselines

__all__ = ["BASELINES", "GROUP_SIZE", "Baseline", "Row", "build_baseline", "run_baselines"]
