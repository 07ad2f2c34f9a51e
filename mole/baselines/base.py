"""The Baseline interface (zoo rows in, zoo rows out) and the group context zoo variants run in on given members.

Members are zoo rows (mole.zoo.store.SCHEMA). A member is identified by (zoo, member_id); when several
rows share it (a dense trajectory's snapshots), the one with the highest `step` is the member and the
earlier ones are its snapshots (IMP rewinds to them). Members of one architecture and training group
(optimizer, batch size, epochs) are stacked (K, ...) and processed at once, as `mole zoo build` does.

Output rows keep the source member's `zoo` name and `member_index`; their `member_id` is
"<zoo>-<run hash>-<member index>-<level tag>", the run hash naming the baseline and its input members,
and `variant` is the baseline's name. Metrics are recomputed on the data the baseline is given.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from mole.data import TaskData
from mole.errors import ConfigError, check_int
from mole.nets import Architecture, Params
from mole.tokenizer.member import arch_info
from mole.zoo.plan import GroupPlan, MemberPlan
from mole.zoo.spec import ZooSpec
from mole.zoo.store import SCHEMA, json_column
from mole.zoo.variants.base import DenseRun, GroupContext, Snapshot, Variant

Row = dict[str, Any]  # one zoo row, see mole.zoo.store.SCHEMA
GROUP_SIZE = 64  # members stacked per run (the zoo's default group_size)


# ---------------------------------------------------------------------------- options
def check_group_size(value: Any, field: str) -> int:
    return check_int(value, field)


# ---------------------------------------------------------------------------- members
def by_member(rows: Iterable[Mapping[str, Any]]) -> list[list[Row]]:
    """Each member's rows sorted by step (the last one is the member), members in first-seen order."""
    members: dict[tuple, list[Row]] = {}
    for r in rows:
        members.setdefault((r.get("zoo"), r["member_id"]), []).append(dict(r))
    return [sorted(rs, key=lambda r: r.get("step") or 0) for rs in members.values()]


def group_key(row: Mapping[str, Any]) -> str:
    """What members stacked together share (as JSON, so nulls sort too)."""
    key = [
        row.get("zoo"),
        row["architecture"],
        json_column(row["arch_options"]),
        row["task"],
        json_column(row.get("task_options")),
        row.get("optimizer"),
        row.get("batch_size"),
        row.get("epochs"),
        row.get("step"),
        row.get("init_params") is not None,
    ]
    return json.dumps(key, sort_keys=True)


def member_groups(rows: Iterable[Mapping[str, Any]], group_size: int = GROUP_SIZE) -> list[list[list[Row]]]:
    """Members (as `by_member` lists) in stacks: same zoo, architecture, task and training group.

    Within a key members go in member_index order, cut into chunks of `group_size`: the order of
    mole.zoo.spec.plan_groups, so the zoo's own group_size gives back the zoo's groups.
    """
    groups: dict[str, list[list[Row]]] = {}
    for member in by_member(rows):
        groups.setdefault(group_key(member[-1]), []).append(member)
    out = []
    for key in sorted(groups):
        ms = sorted(groups[key], key=lambda m: m[-1]["member_index"])
        out += [ms[i : i + group_size] for i in range(0, len(ms), group_size)]
    return out


def plan_of(row: Mapping[str, Any]) -> MemberPlan:
    """The member's seed and stored hyperparameters (None where the row has none, e.g. generated rows)."""
    return MemberPlan(
        index=int(row["member_index"]),
        seed=row.get("seed"),
        lr=row.get("lr"),
        weight_decay=row.get("weight_decay"),
        init_scale=row.get("init_scale"),
        momentum=row.get("momentum"),
        batch_size=row.get("batch_size"),
        epochs=row.get("epochs"),
        optimizer=row.get("optimizer"),
    )


def architecture_of(row: Mapping[str, Any]) -> Architecture:
    options = row["arch_options"]
    return arch_info(row["architecture"], options if isinstance(options, str) else json.dumps(options)).arch


def stack(arch: Architecture, rows: Sequence[Mapping[str, Any]], column: str, device) -> Params:
    """A float tensor column of K rows as stacked params (K, ...) on `device`."""
    flat = torch.from_numpy(np.stack([np.asarray(r[column], dtype=np.float32) for r in rows]))  # (K, P)
    return {n: p.contiguous().to(device) for n, p in arch.unflatten(flat).items()}


def full_row(row: Mapping[str, Any], **columns: Any) -> Row:
    """Every SCHEMA column, in SCHEMA order (None where the row has none), with `columns` replaced."""
    row = {**row, **columns}
    return {c: row.get(c) for c in SCHEMA.names}


def run_digest(name: str, rows: Iterable[Mapping[str, Any]], data: TaskData) -> str:
    """sha256 naming one baseline's run over these members (its 8 first digits go into member ids)."""
    ids = sorted({f"{r.get('zoo')}/{r['member_id']}" for r in rows})
    return hashlib.sha256(json.dumps([name, data.name, ids]).encode()).hexdigest()


def check_task(row: Mapping[str, Any], data: TaskData) -> None:
    if row["task"] != data.name:
        raise ConfigError(
            "task", f"member {row['member_id']} is a {row['task']} network, the data is {data.name}"
        )


def member_context(
    members: Sequence[Sequence[Row]], data: TaskData, digest: str, snapshots: bool = False
) -> GroupContext:
    """A GroupContext whose dense run is the given members' own, so zoo variants run on them unchanged.

    The final snapshot holds the members' params (metrics recomputed on `data`). The init is the members'
    step-0 rows when every member has one, else redrawn from their stored seed and init_scale with
    `Architecture.init_stacked`, exactly as the zoo drew it (None when a row lacks them).

    Args:
        members: one stack (see `member_groups`), each member's rows sorted by step.
        data: the task the metrics are computed on (and any retraining reads).
        digest: names the run; its 8 first digits go into the rows' member ids.
        snapshots: also stack the earlier snapshots all members share (IMP's rewind points).
    """
    finals = [m[-1] for m in members]
    first = finals[0]
    check_task(first, data)
    arch = architecture_of(first)
    plans = tuple(plan_of(r) for r in finals)
    spec = ZooSpec(
        name=str(first.get("zoo") or "members"),
        task=first["task"],
        task_options=json_column(first.get("task_options")),
        architecture=arch.name,
        arch_options=arch.options(),
    )
    ctx = GroupContext(spec, digest, arch, data, GroupPlan(shard=0, members=plans))
    final_step = int(first.get("step") or 0)
    params = stack(arch, finals, "params", ctx.device)
    snaps: list[Snapshot] = []
    if snapshots:
        steps = set.intersection(*({r["step"] for r in m[:-1]} for m in members))
        for s in sorted(steps):
            at = [next(r for r in m if r["step"] == s) for m in members]
            snaps.append(Snapshot(int(s), stack(arch, at, "params", ctx.device), {}))
    init = None
    if snaps and snaps[0].step == 0:
        init = snaps[0].params
    elif all(p.seed is not None and p.init_scale is not None for p in plans):
        init = ctx.init_params()
    ctx._dense = DenseRun(init, [*snaps, Snapshot(final_step, params, ctx.evaluate(params))])
    return ctx


# ---------------------------------------------------------------------------- the interface
class Baseline(ABC):
    """A way of producing networks from given members (pruning them, or approximating them).

    Subclasses validate their options in `__init__` (raising ConfigError naming `baselines.<name>.<key>`),
    expand them into one config per level in `configs`, and turn rows into rows in `run`.

    Args:
        group_size: members stacked per run (every baseline takes it; it changes speed, not results,
            except in the last float bits of stacked matmuls).
        options: the baseline's own options.
    """

    name: ClassVar[str] = ""

    def __init__(self, group_size: int = GROUP_SIZE, **options: Any):
        self.group_size = check_group_size(group_size, self.field("group_size"))
        self.options = dict(options)

    def field(self, key: str) -> str:
        return f"baselines.{self.name}.{key}"

    def configs(self) -> list[dict]:
        """One dict per level of this baseline (e.g. one per sparsity)."""
        return [dict(self.options)]

    @abstractmethod
    def run(self, members: Sequence[Mapping[str, Any]], data: TaskData, config: dict) -> list[Row]:
        """Rows of the zoo SCHEMA for `members` at one config, metrics computed on `data`.

        Args:
            members: zoo rows (see the module docstring for members with several snapshots).
            data: the members' task.
            config: one of `configs()`.
        """


class VariantBaseline(Baseline):
    """A baseline that is a zoo variant run on given members instead of on a freshly trained group.

    The variant's own code does the work (`Variant.run(ctx, config)`) in a `member_context`, so its rows
    are the ones `mole zoo build` would write for these members, with `variant` set to this baseline's name.
    """

    variant_cls: ClassVar[type[Variant]]
    uses_snapshots: ClassVar[bool] = False  # IMP reads earlier snapshots (its rewind point)

    def __init__(self, group_size: int = GROUP_SIZE, **options: Any):
        super().__init__(group_size, **options)
        try:
            self.variant = self.variant_cls(**options)
        except ConfigError as e:  # the variant names its fields variants.<its name>.<key>
            prefix = f"variants.{self.variant_cls.name}"
            field = e.field.replace(prefix, f"baselines.{self.name}", 1)
            raise ConfigError(field, str(e)[len(e.field) + 2 :]) from None

    def configs(self) -> list[dict]:
        return self.variant.configs()

    def run(self, members: Sequence[Mapping[str, Any]], data: TaskData, config: dict) -> list[Row]:
        digest = run_digest(self.name, members, data)
        rows: list[Row] = []
        for group in member_groups(members, self.group_size):
            ctx = member_context(group, data, digest, snapshots=self.uses_snapshots)
            with torch.random.fork_rng(devices=[]):  # nothing should draw from the global RNG; pin it anyway
                torch.manual_seed(0)
                rows += self.run_group(ctx, group, config)
        return [full_row(r, variant=self.name) for r in rows]

    def run_group(self, ctx: GroupContext, group: list[list[Row]], config: dict) -> list[Row]:
        """The rows for one stack of members (the variant's, by default)."""
        return self.variant.run(ctx, config)
