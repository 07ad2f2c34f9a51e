"""The model folder: what training exports and sampling loads, for both model kinds.

    NET/         the EMA network (save_pretrained): denoiser/ for weights, mask_model/ for masks
    scheduler/   the DDPM scheduler (weights models only)
    tokenizer/   the fitted tokenizer (Tokenizer.save)
    mole.json    what sampling needs besides the weights: "target" (the kind: MODEL_KINDS), the
                 conditions and their ranges, the zoo's architecture and task, the cells it
                 trained on ("cells": each (architecture, arch_config, task, task_options) with
                 its variants; sampling picks one per network, mole.diffusion.cells), the
                 tokenizer, and the system's own entries (prediction type; channel groups and mask prior)

The folder is written into a temporary folder and renamed into place (mole.io.atomic_dir).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
from diffusers import DDPMScheduler

from mole.diffusion.denoiser import Denoiser
from mole.errors import ConfigError, StoreError
from mole.io import atomic_dir, check_files, read_json, write_json
from mole.masks.model import MaskModel
from mole.tokenizer import Tokenizer
from mole.zoo import store

META_FILE = "mole.json"
META_FORMAT = 1


@dataclass(frozen=True)
class Kind:
    """A model kind: its network class, the folder it is saved in, whether it has a scheduler."""

    net: type
    folder: str
    scheduler: bool


# mole.json's "target" -> the kind (written to disk, so an explicit registry)
MODEL_KINDS: dict[str, Kind] = {
    "weights": Kind(Denoiser, "denoiser", scheduler=True),
    "mask": Kind(MaskModel, "mask_model", scheduler=False),
}


class Model(NamedTuple):
    """A loaded model folder."""

    net: Any  # Denoiser or MaskModel, in eval mode
    scheduler: DDPMScheduler | None  # weights models only
    tokenizer: Tokenizer
    meta: dict


def model_meta(system, datamodule) -> dict[str, Any]:
    """mole.json of a trained system (DiffusionSystem or MaskSystem) and its set-up ZooDataModule."""
    cfg, tok = system.ema.module.config, datamodule.tokenizer
    tasks = list(datamodule.vocab.get("task", []))
    return {
        "format": META_FORMAT,
        "mode": datamodule.mode,
        "conditions": dict(cfg.conditions or {}),
        "architecture": tok.architecture,
        "arch_config": tok.arch_config,
        "task": tasks[0] if len(tasks) == 1 else tasks,
        "tokenizer": tok.name,
        "normalized": bool(datamodule.normalize),
        "token_dim": cfg.token_dim,
        "max_tokens": cfg.max_tokens,
        "variants": datamodule.variants,
        "cells": list(datamodule.cells),
        "zoo": str(datamodule.zoo) if len(datamodule.zoos) == 1 else [str(z) for z in datamodule.zoos],
        **system.model_meta(),  # "target" and the system's own entries
    }


def export_model(system, datamodule, path: str | Path) -> Path:
    """Write the model folder of a trained system atomically.

    Args:
        system: a DiffusionSystem or MaskSystem (its EMA copy is exported; its model_meta() names
            the kind in "target").
        datamodule: the set-up ZooDataModule it was trained on (tokenizer, vocabularies).
        path: the folder; replaced whole if it exists.
    """
    meta = model_meta(system, datamodule)
    kind = MODEL_KINDS[meta["target"]]
    with atomic_dir(Path(path)) as tmp:
        system.ema.module.save_pretrained(tmp / kind.folder)
        if kind.scheduler:
            system.scheduler.save_pretrained(tmp / "scheduler")
        datamodule.tokenizer.save(tmp / "tokenizer")
        write_json(tmp / META_FILE, meta)
    return Path(path)


def read_meta(path: str | Path) -> dict:
    """mole.json of a model folder, checked: a one-line StoreError when it is not one."""
    path = Path(path)
    if not (path / META_FILE).is_file():
        raise StoreError(f"{path}: not a mole model folder ({META_FILE} is missing)")
    meta = read_json(path / META_FILE, "model metadata")
    if meta.get("format") != META_FORMAT:
        raise StoreError(f"{path / META_FILE}: format {meta.get('format')!r}, this mole reads {META_FORMAT}")
    if meta.get("target") not in MODEL_KINDS:
        raise StoreError(
            f"{path / META_FILE}: unknown target {meta.get('target')!r}; valid: {', '.join(MODEL_KINDS)}"
        )
    return meta


def load_model(path: str | Path) -> Model:
    """(net, scheduler, tokenizer, meta) of a model folder written by `export_model`."""
    path = Path(path)
    meta = read_meta(path)
    kind = MODEL_KINDS[meta["target"]]
    parts = [kind.folder, "tokenizer"] + (["scheduler"] if kind.scheduler else [])
    for part in parts:
        if not (path / part).exists():
            raise StoreError(f"{path}: not a mole model folder ({part} is missing)")
    for part in parts:
        check_files(path / part, f"{part} file")  # diffusers' own errors on a damaged file run to many lines
    try:
        # low_cpu_mem_usage needs `accelerate`, which mole does not require: load plainly, quietly.
        net = kind.net.from_pretrained(path / kind.folder, low_cpu_mem_usage=False).eval()
        scheduler = DDPMScheduler.from_pretrained(path / "scheduler") if kind.scheduler else None
    except (OSError, ValueError, RuntimeError) as e:  # files that parse but do not fit the network
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise StoreError(f"{path}: cannot load the {kind.folder} ({first})") from None
    return Model(net, scheduler, Tokenizer.from_dir(path / "tokenizer"), meta)


def single_zoo(meta: Mapping[str, Any], what: str) -> str:
    """The one zoo a model trained on, else a ConfigError naming `what` needs it (a mixed model
    lists several: measure it per cell, scripts/bench_mixed.py)."""
    zoo = meta.get("zoo")
    if not isinstance(zoo, str):
        raise ConfigError("model", f"{what} reads the one zoo a model trained on; this one lists {zoo!r}")
    return zoo


def task_options_of(meta: dict[str, Any], task: str | None = None) -> dict:
    """The task options of the zoo a model was trained on: those its cells list for `task` (or
    for its one task), else the zoo's spec.json; {} when unreadable."""
    known = {s["task"]: s.get("task_options", {}) for s in meta.get("cells") or []}
    if task in known or (task is None and len(known) == 1):
        return dict(known[task] if task in known else next(iter(known.values())))
    zoo = meta.get("zoo")
    if not isinstance(zoo, str):
        return {}
    try:
        spec = read_json(Path(zoo) / store.SPEC, "spec") if zoo else {}
    except StoreError:
        return {}
    return dict((spec.get("spec") or {}).get("task_options") or {})


class ExportModel(L.Callback):
    """Exports the model folder when fit ends (global rank 0 only).

    Args:
        path: the model folder (e.g. <run_dir>/model).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            export_model(pl_module, trainer.datamodule, self.path)
