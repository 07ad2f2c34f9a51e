"""`mole zoo build`: plan the sweep, train each pending group stacked, write its shard, record it."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from mole.data import TaskData, load_task
from mole.errors import ConfigError, StoreError
from mole.nets import Architecture, build_architecture
from mole.zoo import store
from mole.zoo.plan import select_shards
from mole.zoo.spec import ZooSpec, plan_groups
from mole.zoo.variants import GroupContext, Record, Variant, build_variant


@dataclass
class BuildResult:
    zoo: Path
    built: list[int]  # shard numbers written by this call
    skipped: list[int]  # already in the manifest
    seconds: float


def resolve_device(accelerator: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cpu' / 'cuda' as given."""
    if accelerator == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if accelerator not in ("cpu", "cuda"):
        raise StoreError(f"accelerator: unknown {accelerator!r}; valid: auto, cpu, cuda")
    return torch.device(accelerator)


def launcher_shards(environ: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """(num_shards, shard_index) of this process from the launcher's variables; (1, 0) when none are set.

    - torchrun: WORLD_SIZE and RANK.
    - srun (several tasks in one step): SLURM_STEP_NUM_TASKS and SLURM_PROCID. Not SLURM_NTASKS: a
      batch script sees SLURM_NTASKS=n with SLURM_PROCID=0 and would build only part 0 of n.
    - a SLURM job array: SLURM_ARRAY_TASK_COUNT and SLURM_ARRAY_TASK_ID (less SLURM_ARRAY_TASK_MIN,
      over SLURM_ARRAY_TASK_STEP), so `--array=1-4` and `--array=0-6:2` work.

    An array of multi-process tasks splits twice: task t of T, process r of R is part t*R + r of T*R.
    """
    inner = (1, 0)
    if "WORLD_SIZE" in environ or "RANK" in environ:
        inner = (_env_int(environ, "WORLD_SIZE"), _env_int(environ, "RANK"))
    elif "SLURM_STEP_NUM_TASKS" in environ:
        inner = (_env_int(environ, "SLURM_STEP_NUM_TASKS"), _env_int(environ, "SLURM_PROCID"))
    outer = (1, 0)
    if "SLURM_ARRAY_TASK_ID" in environ:
        task = _env_int(environ, "SLURM_ARRAY_TASK_ID") - int(environ.get("SLURM_ARRAY_TASK_MIN", 0))
        step = int(environ.get("SLURM_ARRAY_TASK_STEP", 1))
        outer = (_env_int(environ, "SLURM_ARRAY_TASK_COUNT"), task // step)
    num = outer[0] * inner[0]
    index = outer[1] * inner[0] + inner[1]
    if not 0 <= index < num:
        raise ConfigError(
            "shard_index", f"launcher variables give part {index} of {num}; pass --num-shards/--shard-index"
        )
    return num, index


def _env_int(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except (KeyError, ValueError):
        raise ConfigError(
            "shard_index", f"launcher variable {name}={environ.get(name)!r} is not an integer"
        ) from None


def resolve_shards(
    num_shards: int | None, shard_index: int | None, environ: Mapping[str, str] = os.environ
) -> tuple[int, int]:
    """Explicit values win; what is left unset comes from the launcher (see launcher_shards)."""
    env_num, env_index = launcher_shards(environ)
    return (env_num if num_shards is None else num_shards, env_index if shard_index is None else shard_index)


def default_processes(environ: Mapping[str, str] = os.environ) -> int:
    """One training process per core this process may use, the cores shared by torchrun's local ranks."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(environ.get("LOCAL_WORLD_SIZE", 1)))


def prepare(spec: ZooSpec) -> tuple[TaskData, Architecture, list[Variant]]:
    """Load the task and instantiate architecture and variants: every name and option is checked here."""
    variants = [
        build_variant(v.name, dict(v.options), field=f"variants[{i}]") for i, v in enumerate(spec.variants)
    ]
    seen: dict[str, int] = {}
    for i, variant in enumerate(variants):
        for config in variant.configs():
            tag = variant.tag(config)
            if tag in seen:
                raise ConfigError(
                    f"variants[{i}]",
                    f"repeats level {tag!r} of variants[{seen[tag]}]: members would be built twice",
                )
            seen[tag] = i
    data = load_task(spec.task, **spec.task_options)
    arch = build_architecture(spec.architecture, data.input_shape, data.num_classes, **spec.arch_options)
    for variant in variants:
        variant.check(arch)
    return data, arch, variants


def check_zoo_folder(out: Path, spec: ZooSpec) -> dict | None:
    """An existing zoo must come from the same spec and be intact; return its manifest (or None)."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise StoreError(f"{out}: exists and is not a folder")
    if (out / store.SPEC).exists():
        old = store.read_json(out / store.SPEC, "spec")
        if old.get("spec_hash") != spec.spec_hash():
            raise StoreError(
                f"{out}: holds a zoo built from another spec (hash {str(old.get('spec_hash'))[:12]}…, this one {spec.spec_hash()[:12]}…); choose another --out"
            )
    elif store.holds_files(out) and not (out / store.MANIFEST).exists():
        raise StoreError(f"{out}: folder is not empty and holds no zoo; choose another --out")
    if (out / store.MANIFEST).exists():
        return store.verify_zoo(out)
    return None


def build_shard(ctx: GroupContext, variants: list[Variant]) -> list[Record]:
    records = []
    for variant in variants:
        for config in variant.configs():
            records += variant.run(ctx, config)
    return records


def build_zoo(
    spec: ZooSpec,
    out: str | Path,
    num_shards: int = 1,
    shard_index: int = 0,
    accelerator: str = "cpu",
    progress: bool = True,
    processes: int = 1,
) -> BuildResult:
    """Build (or resume) the zoo of `spec` in `out`; only this process's shards are built.

    Args:
        spec: the validated sweep.
        out: zoo folder; created if missing; resumed if it holds the same spec.
        num_shards, shard_index: split the sweep's groups round-robin across processes or machines.
        accelerator: "cpu", "cuda" or "auto". CPU builds are bitwise reproducible.
        progress: show a progress bar.
        processes: CPU worker processes for each group's dense training (bitwise the same zoo as 1).
    """
    t0 = time.perf_counter()
    out = Path(out)
    if processes < 1:
        raise ConfigError("processes", f"must be >= 1, got {processes}")
    groups = plan_groups(spec)
    mine = select_shards(groups, num_shards, shard_index)
    data, arch, variants = prepare(spec)  # validates everything before anything is written
    manifest = check_zoo_folder(out, spec)
    done = set(manifest["shards"]) if manifest else set()
    pending = [g for g in mine if store.shard_name(g.shard).removesuffix(".parquet") not in done]
    skipped = [g.shard for g in mine if g not in pending]

    out.mkdir(parents=True, exist_ok=True)
    if not (out / store.SPEC).exists():
        store.write_json(out / store.SPEC, {"spec_hash": spec.spec_hash(), "spec": spec.to_dict()})
    device = resolve_device(accelerator)
    data = data.to(device)
    spec_hash = spec.spec_hash()

    with _progress(progress) as bar:
        shards_task = bar.add_task(f"zoo {spec.name}: shards", total=len(pending)) if bar else None
        for group in pending:
            ctx = GroupContext(spec, spec_hash, arch, data, group, processes=processes)
            if bar:
                total = ctx.total_steps + sum(v.extra_steps(ctx, c) for v in variants for c in v.configs())
                steps_task = bar.add_task(f"  shard {group.shard}: {len(group.members)} members", total=total)
                ctx.on_progress = lambda n, t=steps_task: bar.advance(t, n)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(group.shard)  # nothing should draw from the global RNG; pin it anyway
                records = build_shard(ctx, variants)
            entry = store.write_shard(out / "shards" / store.shard_name(group.shard), records)
            entry["group"] = {"optimizer": group.key[0], "batch_size": group.key[1], "epochs": group.key[2]}
            store.record_shard(out, group.shard, entry, spec_hash, len(groups))
            if bar:
                bar.remove_task(steps_task)
                bar.advance(shards_task, 1)
    if not (out / store.MANIFEST).exists():  # nothing was pending for this process: still leave a manifest
        with store.manifest_lock(out):
            if not (out / store.MANIFEST).exists():
                store.write_json(out / store.MANIFEST, store.empty_manifest(spec_hash, len(groups)))
    return BuildResult(out, [g.shard for g in pending], skipped, time.perf_counter() - t0)


class _NoBar:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _progress(enabled: bool):
    if not enabled:
        return _NoBar()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )
