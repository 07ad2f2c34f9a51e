"""Members out of a zoo: rebuild any row as an nn.Module, or export it as safetensors + meta.json."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from safetensors.torch import save_file
from torch import nn

from mole.errors import StoreError
from mole.io import read_safetensors
from mole.nets import Architecture, Params, architecture_from_config
from mole.zoo import store

META_KEYS = [f.name for f in store.SCHEMA if f.name not in store.TENSOR_COLUMNS]


def arch_from_row(row: dict) -> Architecture:
    return architecture_from_config(row["architecture"], json.loads(row["arch_options"]))


def params_from_row(row: dict, arch: Architecture | None = None) -> Params:
    """The member's effective parameters (unstacked) from a zoo row."""
    arch = arch or arch_from_row(row)
    return arch.unflatten(torch.as_tensor(row["params"], dtype=torch.float32))


def module_from_row(row: dict) -> nn.Module:
    """A plain nn.Module holding the member of a zoo row."""
    arch = arch_from_row(row)
    return arch.to_module(params_from_row(row, arch))


def find_member_rows(zoo: Path, member_id: str) -> list[dict]:
    """Every row (snapshot) of one member, sorted by step; an unknown id lists a few valid ones."""
    rows = []
    files = store.shard_files(zoo)
    for f in files:
        table = pq.read_table(f)
        hit = table.filter(pc.equal(table["member_id"], member_id))
        rows += hit.to_pylist()
    if not rows:
        ids = store.read_zoo(zoo, columns=["member_id"], verify=False)["member_id"].unique().to_pylist()
        sample = ", ".join(sorted(ids)[:5]) + (" …" if len(ids) > 5 else "")
        raise StoreError(f"member: no member {member_id!r} in {zoo}; e.g. {sample or '(zoo is empty)'}")
    return sorted(rows, key=lambda r: r["step"])


def export_member(zoo: str | Path, member_id: str, to: str | Path, step: int | None = None) -> Path:
    """Write `weights.safetensors` (the module's state_dict) and `meta.json` for one member.

    Args:
        zoo: the zoo folder.
        member_id: the member's id (see `mole zoo info`).
        to: output folder (created; files written atomically).
        step: which snapshot; default the final one.
    """
    rows = find_member_rows(Path(zoo), member_id)
    if step is None:
        row = rows[-1]
    else:
        by_step = {r["step"]: r for r in rows}
        if step not in by_step:
            raise StoreError(
                f"step: member {member_id} has no snapshot at step {step}; steps are {sorted(by_step)}"
            )
        row = by_step[step]
    module = module_from_row(row)
    to = Path(to)
    with store.atomic_path(to / "weights.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp))
    meta = {k: row[k] for k in META_KEYS}
    for k in ("variant_config", "task_options", "arch_options", "extra"):
        meta[k] = json.loads(meta[k]) if meta[k] else None
    store.write_json(to / "meta.json", meta)
    return to


def load_exported(folder: str | Path) -> nn.Module:
    """Rebuild the nn.Module of an exported member (no pickle: safetensors + JSON)."""
    folder = Path(folder)
    meta = store.read_json(folder / "meta.json", "member metadata")
    arch = architecture_from_config(meta["architecture"], meta["arch_options"])
    module = arch.build_module()
    state = read_safetensors(folder / "weights.safetensors", "member weights")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:  # tensors that do not fit the architecture meta.json names
        first = str(e).strip().splitlines()[0]
        raise StoreError(
            f"{folder / 'weights.safetensors'}: does not fit {meta['architecture']} ({first})"
        ) from None
    return module
