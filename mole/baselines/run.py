"""run_baselines: every requested baseline at every level over the same members, optionally written as a zoo.

The written folder is an ordinary zoo (mole.zoo.store), like a generated one (mole.diffusion.generated):
spec.json describes the run (baselines and options, task, the source members' ids hash) and its hash;
shards hold the rows; the manifest is written last, each file atomically (temp name + rename), so a
killed run leaves nothing that counts and the same call redoes it. A folder that already holds this
same run, complete, is read back instead of recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from mole.baselines.base import GROUP_SIZE, Row, by_member
from mole.baselines.registry import build_baseline
from mole.data import TaskData
from mole.errors import ConfigError
from mole.zoo import store


def describe(members: list[Row], data: TaskData, baselines: Mapping[str, Any]) -> dict:
    """What a run is: baselines with their options, the task and the source members (ids hashed)."""
    ids = sorted({f"{r.get('zoo')}/{r['member_id']}@{r.get('step')}" for r in members})
    return {
        "baselines": {name: dict(options or {}) for name, options in baselines.items()},
        "task": data.name,
        "zoos": sorted({str(r.get("zoo")) for r in members}),
        "members": len(by_member(members)),
        "member_rows_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
    }


def run_baselines(
    members: Iterable[Mapping[str, Any]] | pa.Table,
    data: TaskData,
    baselines: Mapping[str, Mapping[str, Any] | None],
    out: str | Path | None = None,
    group_size: int = GROUP_SIZE,
    progress: bool = False,
) -> list[Row]:
    """Run every baseline at every one of its configs on the same members.

    Args:
        members: zoo rows (dicts or an Arrow table), e.g. a zoo's final dense rows; see
            mole.baselines.base for members passed with all their snapshots (IMP rewinds to them).
        data: their task; every output row's metrics are computed on it.
        baselines: name -> options, e.g. {"magnitude": {"sparsity": [0.5, 0.9]}, "random": {}}.
        out: write the rows as a zoo folder there (None: only return them). If it already holds this
            run, complete, its rows are read back instead.
        group_size: members stacked per run.
        progress: show a progress bar (one step per baseline config).

    Returns:
        The output rows (mole.zoo.store.SCHEMA), baselines in the given order.
    """
    members = members.to_pylist() if isinstance(members, pa.Table) else [dict(r) for r in members]
    if not members:
        raise ConfigError("members", "no members given")
    if not baselines:
        raise ConfigError("baselines", "no baselines given")
    built = {
        name: build_baseline(name, {"group_size": group_size, **(opts or {})})
        for name, opts in baselines.items()
    }
    description = describe(members, data, baselines)
    if out is not None and store.check_described_zoo(Path(out), description, "baseline run"):
        return store.read_zoo(Path(out)).to_pylist()

    rows: list[Row] = []
    jobs = [(name, b, config) for name, b in built.items() for config in b.configs()]
    with _bar(progress, len(jobs)) as advance:
        for name, baseline, config in jobs:
            rows += baseline.run(members, data, config)
            advance(f"{name} {json.dumps(config, sort_keys=True)}")
    seen: dict[str, int] = {}
    for r in rows:
        seen[r["member_id"]] = seen.get(r["member_id"], 0) + 1
    repeated = [m for m, c in seen.items() if c > 1]
    if repeated:
        raise ConfigError("baselines", f"member id {repeated[0]} produced twice: two entries repeat a level")
    if out is not None:
        store.write_described_zoo(Path(out), rows, dict(description), "baselines")
    return rows


@contextlib.contextmanager
def _bar(enabled: bool, total: int):
    """Yield advance(label): a rich progress bar over the baseline configs, or a no-op."""
    if not enabled:
        yield lambda label: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    ) as bar:
        task = bar.add_task("baselines", total=total)
        yield lambda label: bar.update(task, advance=1, description=f"baselines: {label}")
