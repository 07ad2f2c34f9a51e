"""time_to_network: seconds to produce one network by sampling vs by SGD to the same test accuracy."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mole.errors import ConfigError
from mole.eval.base import EvalSet, Evaluator, Metric, json_column


def steps_to_reach(reference: list[dict], target: float, variant: str | None) -> list[int | None]:
    """For each reference member (rows grouped by member_id): the first snapshot step at which its
    test_acc >= target, or None when no snapshot reaches it."""
    runs: dict[str, list[tuple[int, float]]] = {}
    for r in reference:
        if (variant is not None and r.get("variant") != variant) or r.get("test_acc") is None:
            continue
        runs.setdefault(r["member_id"], []).append((int(r["step"]), float(r["test_acc"])))
    out = []
    for snaps in runs.values():
        out.append(next((step for step, acc in sorted(snaps) if acc >= target), None))
    return out


@dataclass
class TimeToNetwork(Evaluator):
    """Seconds per network by sampling vs by SGD training to the generated networks' accuracy.

    Computed as:
        sampling_s_per_net = sampling_seconds / number of members when the option is given, else the
            mean of the members' extra["sampling_seconds"] (each member's share of its sampling run).
        target_acc = mean stored test_acc of the members.
        For each reference member (rows grouped by member_id, of `variant`), its first snapshot step
            with test_acc >= target_acc. Snapshots are sparse, so this is the first *recorded* step,
            an upper bound on the true one at the resolution of the zoo's snapshot schedule.
        sgd_frac_reached = share of reference members that reach target_acc at some snapshot.
        sgd_s_per_net = mean of those steps over the members that reach it, times
            sgd_seconds_per_step (nan when none does: SGD did not get there within the recorded runs).
        speedup = sgd_s_per_net / sampling_s_per_net.
    Sampling and SGD times count model work only: neither includes loading data or evaluating.

    Args:
        sgd_seconds_per_step: wall seconds of one optimizer step of ONE network, measured by the
            caller on the same hardware as the sampling (for stacked training of K members: a stacked
            step's time divided by K). Required.
        sampling_seconds: total wall seconds it took to sample all the evaluated members.
        variant: which reference rows are SGD trajectories ("dense": plain training); None: all.
    """

    name: ClassVar[str] = "time_to_network"
    sgd_seconds_per_step: float | None = None
    sampling_seconds: float | None = None
    variant: str | None = "dense"

    def check(self) -> None:
        if self.sgd_seconds_per_step is None:
            raise ConfigError(
                self.field("sgd_seconds_per_step"), "required (seconds per SGD step of one network)"
            )
        self.check_number("sgd_seconds_per_step", 0.0)
        self.check_number("sampling_seconds", 0.0, optional=True)
        if self.variant is not None and not isinstance(self.variant, str):
            raise ConfigError(self.field("variant"), f"must be a variant name or null, got {self.variant!r}")

    def sampling_per_net(self, s: EvalSet) -> float:
        if self.sampling_seconds is not None:
            return self.sampling_seconds / max(len(s.members), 1)
        shares = [json_column(r.get("extra")).get("sampling_seconds") for r in s.members]
        if not shares or any(v is None for v in shares):
            raise ConfigError(
                self.field("sampling_seconds"),
                "not given, and not every member's extra holds sampling_seconds",
            )
        return float(np.mean(shares))

    def __call__(self, s: EvalSet) -> Iterator[Metric]:
        self.require(s, "reference")
        sampling = self.sampling_per_net(s)
        accs = [float(r["test_acc"]) for r in s.members if r.get("test_acc") is not None]
        if not accs:
            raise ConfigError(f"eval.{self.name}", f"set {s.label!r} has no member with a test_acc")
        target = float(np.mean(accs))
        steps = steps_to_reach(s.rows("reference"), target, self.variant)
        if not steps:
            raise ConfigError(
                self.field("variant"), f"no reference rows of variant {self.variant!r} with step and test_acc"
            )
        reached = [k for k in steps if k is not None]
        sgd = float(np.mean(reached)) * self.sgd_seconds_per_step if reached else math.nan
        yield "target_acc", target
        yield "sampling_s_per_net", sampling
        yield "sgd_frac_reached", len(reached) / len(steps)
        yield "sgd_s_per_net", sgd
        yield "speedup", sgd / sampling if sampling > 0 else (math.inf if sgd > 0 else math.nan)
