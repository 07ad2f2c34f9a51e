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

import numpy as np

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
        random: per member, this many more steps drawn at random along its run, as G.pt keeps its
            checkpoints. Accuracy rises within the first few percent of a run and evenly spaced
            snapshots skip that rise (35 of the quickstart's 512 rows lay between 0.2 and 0.8 test
            accuracy), so steps are drawn log-uniformly in `step + total / 50`: about half of them fall
            in the first tenth of the run, few in the handful of steps that stay at chance.
    """

    every: int | None = None
    steps: tuple[int, ...] = ()
    include_init: bool = True
    random: int = 0

    def steps_for(self, total: int) -> list[int]:
        """The steps every member keeps."""
        keep = {total} | {s for s in self.steps if 0 <= s <= total}
        if self.include_init:
            keep.add(0)
        if self.every:
            keep.update(range(self.every, total + 1, self.every))
        return sorted(keep)

    def random_steps(self, total: int, seed: int) -> list[int]:
        """One member's random steps (those not already kept by every member), from its own seed."""
        if self.random <= 0 or total < 1:
            return []
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))  # apart from init and data order
        shift = total / 50
        u = rng.uniform(np.log(1 + shift), np.log(total + 1 + shift), size=self.random)
        drawn = np.floor(np.exp(u) - shift).astype(int)  # in [1, total]
        return sorted(set(np.clip(drawn, 1, total).tolist()) - set(self.steps_for(total)))
