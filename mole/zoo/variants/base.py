"""The Variant interface and the per-group context every variant reads from."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from mole.data import TaskData
from mole.errors import ConfigError
from mole.nets import Architecture, Params
from mole.zoo.plan import GroupPlan, SnapshotSchedule
from mole.zoo.train import evaluate_stacked, steps_per_epoch, train_stacked

Record = dict[str, Any]  # one row of a shard; see mole.zoo.store.SCHEMA


@dataclass
class Snapshot:
    """Stacked params (K, ...) of a group at one step, with every member's metrics.

    `members` holds the group positions of the rows when the snapshot keeps only some members (their
    random steps, `SnapshotSchedule.random`); None means all K.
    """

    step: int
    params: Params
    metrics: dict[str, torch.Tensor]  # name -> (K,)
    members: tuple[int, ...] | None = None


@dataclass
class DenseRun:
    """A group's plain training run: its init and the kept snapshots (the last one is final).

    `snapshots` hold every member (the schedule's shared steps); `extra` the members' random steps.
    """

    init: Params
    snapshots: list[Snapshot]
    extra: list[Snapshot] = field(default_factory=list)

    @property
    def final(self) -> Snapshot:
        return self.snapshots[-1]


class Sweep(Protocol):
    """What a group reads of its sweep: the names its rows carry and the steps kept.

    mole.zoo.spec.ZooSpec is one. The spec checks its variant names against VARIANTS, so the variants
    sit below it and name only the fields they read.
    """

    @property
    def name(self) -> str: ...

    @property
    def task(self) -> str: ...

    @property
    def task_options(self) -> Mapping[str, Any]: ...

    @property
    def snapshots(self) -> SnapshotSchedule: ...


@dataclass
class GroupContext:
    """What a variant needs to produce one shard: the sweep, the architecture, the data, the members."""

    spec: Sweep
    spec_hash: str
    arch: Architecture
    data: TaskData
    group: GroupPlan
    on_progress: Any = None
    processes: int = 1  # worker processes for the dense run (bitwise the same members as 1)
    _dense: DenseRun | None = field(default=None, repr=False)

    @property
    def k(self) -> int:
        return len(self.group.members)

    @property
    def total_steps(self) -> int:
        m = self.group.members[0]
        return m.epochs * steps_per_epoch(len(self.data.y_train), m.batch_size)

    def snapshot_steps(self) -> list[int]:
        """The steps every member of the group keeps."""
        return self.spec.snapshots.steps_for(self.total_steps)

    def random_steps(self) -> dict[int, tuple[int, ...]]:
        """step -> group positions of the members that drew it (SnapshotSchedule.random)."""
        out: dict[int, list[int]] = {}
        for k, m in enumerate(self.group.members):
            for step in self.spec.snapshots.random_steps(self.total_steps, m.seed):
                out.setdefault(step, []).append(k)
        return {step: tuple(ks) for step, ks in out.items()}

    def init_params(self) -> Params:
        ms = self.group.members
        params = self.arch.init_stacked([m.seed for m in ms], [m.init_scale for m in ms])  # drawn on CPU
        return {k: v.to(self.device) for k, v in params.items()}

    @property
    def device(self) -> torch.device:
        return self.data.x_train.device

    def evaluate(self, params: Params) -> dict[str, torch.Tensor]:
        return evaluate_stacked(self.arch.forward_stacked, params, self.data)

    def dense(self) -> DenseRun:
        """Train the group's members once (memoised: pruning variants start from the same run)."""
        if self._dense is None:
            init = self.init_params()
            shared, drawn = set(self.snapshot_steps()), self.random_steps()
            snaps: list[Snapshot] = []
            extra: list[Snapshot] = []

            def keep(step: int, params: Params) -> None:
                if step in shared:
                    p = {k: v.detach().clone() for k, v in params.items()}
                    snaps.append(Snapshot(step, p, self.evaluate(p)))
                if step in drawn:  # only the members that drew this step are copied and evaluated
                    ks = drawn[step]
                    p = {k: v.detach()[list(ks)].clone() for k, v in params.items()}  # (len(ks), ...)
                    extra.append(Snapshot(step, p, self.evaluate(p), members=ks))

            train_stacked(
                self.arch.forward_stacked,
                {k: v.clone() for k, v in init.items()},
                self.data,
                self.group.members,
                snapshot_steps=sorted(shared | set(drawn)),
                on_snapshot=keep,
                on_progress=self.on_progress,
                processes=self.processes,
                grads=self.arch.loss_grads_stacked,
            )
            self._dense = DenseRun(init, snaps, extra)
        return self._dense

    def member_id(self, index: int, tag: str) -> str:
        return f"{self.spec.name}-{self.spec_hash[:8]}-{index:05d}-{tag}"

    def records(
        self, tag: str, variant: str, config: dict, snap: Snapshot, final: bool, **columns: Any
    ) -> list[Record]:
        """One record per member at this snapshot; `columns` are (K, ...) tensors or scalars to add."""
        flat = self.arch.flatten(snap.params).float().cpu()  # (K, P), or (len(snap.members), P)
        spe = steps_per_epoch(len(self.data.y_train), self.group.members[0].batch_size)
        positions = snap.members if snap.members is not None else range(self.k)
        out = []
        for k, m in enumerate(self.group.members[p] for p in positions):
            rec: Record = {
                "zoo": self.spec.name,
                "member_id": self.member_id(m.index, tag),
                "member_index": m.index,
                "variant": variant,
                "variant_config": json.dumps(config, sort_keys=True),
                "task": self.spec.task,
                "task_options": json.dumps(dict(self.spec.task_options), sort_keys=True),
                "architecture": self.arch.name,
                "arch_options": json.dumps(self.arch.config(), sort_keys=True),
                "seed": m.seed,
                **m.hparams(),
                "step": snap.step,
                "epoch": snap.step / spe,
                "final": final,
                **{name: float(v[k]) for name, v in snap.metrics.items()},
                "num_params": self.arch.num_params,
                "nonzero_params": int((flat[k] != 0).sum()),
                "sparsity": 0.0,
                "params": flat[k].numpy(),
            }
            for name, value in columns.items():
                rec[name] = value[k] if isinstance(value, (torch.Tensor, list, tuple)) else value
                if isinstance(rec[name], torch.Tensor):
                    rec[name] = rec[name].cpu().numpy() if rec[name].dim() else rec[name].item()
            out.append(rec)
        return out


def check_known(
    name: str, options: Mapping[str, Any], valid: Iterable[str], section: str = "variants"
) -> None:
    """Unknown option keys -> ConfigError naming `<section>.<name>.<key>` and listing the valid ones."""
    valid = tuple(valid)
    for key in options:
        if key not in valid:
            raise ConfigError(f"{section}.{name}.{key}", f"unknown option; valid: {', '.join(valid)}")


class Variant(ABC):
    """A way of producing zoo members from a group (dense training, pruning, quantization, ...).

    Subclasses validate their options in `__init__` (raising ConfigError naming the field),
    expand them into one config per level in `configs`, and produce records in `run`.
    """

    name: str = ""

    def __init__(self, **options: Any):
        self.options = options

    def configs(self) -> list[dict]:
        """One dict per level of this variant (e.g. one per sparsity)."""
        return [dict(self.options)]

    def tag(self, config: dict) -> str:
        """Short, unique, filesystem-safe name of one config (part of the member id)."""
        if not config:
            return self.name
        return self.name + "-" + "-".join(f"{k}{v}" for k, v in sorted(config.items()))

    def check(self, arch: Architecture) -> None:
        """Raise ConfigError for options the architecture cannot take (called before anything is written)."""
        return None  # most variants accept every architecture

    def extra_steps(self, ctx: GroupContext, config: dict) -> int:
        """Training steps this config adds beyond the group's shared dense run (for the progress bar)."""
        return 0

    @abstractmethod
    def run(self, ctx: GroupContext, config: dict) -> list[Record]:
        """The shard records this variant contributes for the group at one config.

        A config may emit rows under several tags (IMP: one per round); every tag must be unique
        across the whole sweep, since it is part of the member id.
        """
