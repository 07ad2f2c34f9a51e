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
from mole.io import atomic_dir, read_safetensors
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
        to: output folder (a new one appears whole; in an existing one each file is replaced atomically).
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
    # everything is computed before anything is written, so a bad row leaves no partial export
    try:
        module = module_from_row(row)
        state = {k: v.contiguous() for k, v in module.state_dict().items()}
        meta = {k: row[k] for k in META_KEYS}
        for k in ("variant_config", "task_options", "arch_options", "extra"):
            meta[k] = json.loads(meta[k]) if meta[k] else None
    except (ValueError, RuntimeError, TypeError) as e:  # a row that fits the schema but not its network
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise StoreError(f"{zoo}: member {member_id} step {row['step']}: unreadable row ({first})") from None
    to = Path(to)
    if to.exists():  # the user's folder, maybe with files of its own: replace only ours, each atomically
        _write_member(to, state, meta)
    else:  # a new folder appears whole or not at all
        with atomic_dir(to) as tmp:
            _write_member(tmp, state, meta)
    return to


def _write_member(folder: Path, state: dict[str, torch.Tensor], meta: dict) -> None:
    with store.atomic_path(folder / "weights.safetensors") as tmp:
        save_file(state, str(tmp))
    store.write_json(folder / "meta.json", meta)


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
