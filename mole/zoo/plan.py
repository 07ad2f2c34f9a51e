"""What a zoo build runs: each member's seed and hyperparameters (MemberPlan), the members trained
together (GroupPlan, one shard each), which shards a process builds, and which steps are kept
(SnapshotSchedule).

Plain data that the trainer and the variants read. mole.zoo.spec draws the plans from a sweep and
checks its variant names against VARIANTS, so it sits above the variants; keeping the plans here lets
the variants depend on them without depending on the spec.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mole.errors import ConfigError


@dataclass(frozen=True)
class MemberPlan:
    """One member's seed and hyperparameters, drawn from the sweep."""

    index: int
    seed: int
    lr: float
    weight_decay: float
    init_scale: float
    momentum: float
    batch_size: int
    epochs: int
    optimizer: str

    def hparams(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("index", "seed")}


@dataclass(frozen=True)
class GroupPlan:
    """Members trained together: they share optimizer, batch size and epochs. One group = one shard."""

    shard: int
    members: tuple[MemberPlan, ...]

    @property
    def key(self) -> tuple[str, int, int]:
        m = self.members[0]
        return (m.optimizer, m.batch_size, m.epochs)


def select_shards(groups: list[GroupPlan], num_shards: int, shard_index: int) -> list[GroupPlan]:
    """The groups process `shard_index` of `num_shards` builds (round-robin, deterministic)."""
    if num_shards < 1:
        raise ConfigError("num_shards", f"must be >= 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise ConfigError("shard_index", f"must be in [0, {num_shards}), got {shard_index}")
    return [g for g in groups if g.shard % num_shards == shard_index]


@dataclass(frozen=True)
class SnapshotSchedule:
    """Which steps of each trajectory are kept (the final step always is).

    Args:
        every: keep every `every`-th step (None: only the listed ones).
        steps: extra steps to keep.
        include_init: keep step 0, the initialisation.
    """

    every: int | None = None
    steps: tuple[int, ...] = ()
    include_init: bool = True

    def steps_for(self, total: int) -> list[int]:
        keep = {total} | {s for s in self.steps if 0 <= s <= total}
        if self.include_init:
            keep.add(0)
        if self.every:
            keep.update(range(self.every, total + 1, self.every))
        return sorted(keep)
