"""dense: plain training; every kept snapshot of the trajectory is a row (G.pt trains on pairs of them)."""

from __future__ import annotations

from mole.errors import ConfigError
from mole.zoo.variants.base import GroupContext, Record, Variant


class Dense(Variant):
    """Plain SGD/Adam training of the group; takes no options."""

    name = "dense"

    def __init__(self, **options):
        if options:
            raise ConfigError(f"variants.{self.name}.options", f"takes no options, got {sorted(options)}")
        super().__init__()

    def run(self, ctx: GroupContext, config: dict) -> list[Record]:
        run = ctx.dense()
        final = run.final
        records = []
        for snap in sorted(run.snapshots + run.extra, key=lambda s: s.step):  # stable: shared steps first
            records += ctx.records(self.tag(config), self.name, config, snap, final=snap is final)
        return records
