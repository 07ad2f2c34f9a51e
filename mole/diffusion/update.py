"""Learning to learn (G.pt): a pairs model's update of a starting network, applied K times in a chain.

A start is a zoo member's snapshot (`ZOO:MEMBER@STEP`; without @STEP its final one) or a fresh init
drawn from the architecture's own initialiser (PyTorch's default, scale 1) with a seed that no
training member used. Each update measures its start's test loss and accuracy on the task, prompts
them as start_test_loss / start_test_acc beside the user's prompt (clipped into the trained range,
the clip recorded), and samples with the start's tokens as context. Update k + 1 starts from update
k's output, so its start condition is the output's measured loss, not the prompt it was asked for.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mole.conditions import CONDITIONS
from mole.data import TaskData, load_task
from mole.diffusion.cells import SHAPE_KEY, TOLD, cells_of, pick
from mole.diffusion.generated import evaluate, resolve_task, write_generated
from mole.diffusion.model_dir import Model, load_model, read_meta, task_options_of
from mole.diffusion.options import SampleOptions
from mole.diffusion.prompts import expand_prompts
from mole.diffusion.sample import sample
from mole.errors import ConfigError, StoreError, check_int
from mole.tokenizer import MemberTensors
from mole.zoo import store
from mole.zoo.export import find_member_rows

START_CONDITIONS = {c.name: c.column for c in CONDITIONS if c.start}  # start_test_loss -> test_loss
REF = re.compile(r"^(?P<zoo>.+):(?P<member>[^:@/]+)(?:@(?P<step>-?\d+))?$")  # ZOO:MEMBER[@STEP]


@dataclass
class Start:
    """A starting network and how it was chosen ("ZOO:MEMBER@STEP" or "init:SEED")."""

    member: MemberTensors
    ref: str


# ---------------------------------------------------------------------------- starts
def parse_start(ref: str) -> tuple[Path, str, int | None]:
    """(zoo, member id, step or None) of a `ZOO:MEMBER@STEP` reference (ConfigError naming `start`)."""
    match = REF.match(str(ref).strip())
    if not match:
        raise ConfigError("start", f"cannot read {ref!r}: give ZOO:MEMBER or ZOO:MEMBER@STEP")
    step = match["step"]
    if step is not None and int(step) < 0:
        raise ConfigError("start", f"step must be >= 0, got {step}")
    return Path(match["zoo"]), match["member"], None if step is None else int(step)


def load_start(ref: str) -> Start:
    """The snapshot a `ZOO:MEMBER@STEP` reference names (its final one without @STEP)."""
    zoo, member, step = parse_start(ref)
    if not zoo.is_dir():
        raise ConfigError("start", f"no zoo folder {str(zoo)!r}")
    try:
        rows = find_member_rows(zoo, member)
    except StoreError as e:
        raise ConfigError("start", str(e).removeprefix("member: ")) from None
    if step is None:
        row = rows[-1]
    else:
        by_step = {r["step"]: r for r in rows}
        if step not in by_step:
            steps = ", ".join(str(s) for s in sorted(by_step))
            raise ConfigError(
                "start", f"member {member!r} has no snapshot at step {step}; its steps: {steps}"
            )
        row = by_step[step]
    return Start(MemberTensors.from_row(row), f"{zoo}:{member}@{row['step']}")


def training_seeds(zoo: str | Path | Sequence[str | Path]) -> dict[int, str]:
    """seed -> member id of every member of a zoo, or of every zoo of a mixed model's list (the inits
    a model may have seen)."""
    taken: dict[int, str] = {}
    for one in [zoo] if isinstance(zoo, (str, Path)) else zoo:
        one = Path(one)
        if not one.is_dir():
            raise ConfigError(
                "start_init", f"cannot check the seed: the model's training zoo {str(one)!r} is gone"
            )
        table = store.read_zoo(one, columns=["seed", "member_id"], verify=False)
        taken.update(zip(table["seed"].to_pylist(), table["member_id"].to_pylist()))
    return taken


def fresh_init(
    meta: Mapping[str, Any],
    seed: int,
    taken: Mapping[int, str] | None = None,
    prompt: Mapping[str, Any] | None = None,
) -> Start:
    """A fresh init of the model's architecture from `seed` (its own initialiser, scale 1).

    Args:
        meta: mole.json of the model folder (its cells, zoo).
        seed: the init's seed; one a training member used is refused (that init was seen).
        taken: seed -> member id of the training members (default: read from the model's zoos).
        prompt: for a model of several cells, the conditions that pick the init's network
            (architecture, task, variant, arch_options: mole.diffusion.cells); a model of one cell
            needs none.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError("start_init", f"must be an integer seed >= 0, got {seed!r}")
    picking = {k: v for k, v in (prompt or {}).items() if k in (*TOLD, "variant", SHAPE_KEY)}
    cell = cells_of(meta)[pick(meta, picking)]
    taken = training_seeds(meta["zoo"]) if taken is None else taken
    if seed in taken:
        raise ConfigError("start_init", f"seed {seed} is training member {taken[seed]!r}'s: pick another")
    arch = MemberTensors(cell["architecture"], cell["arch_config"], {}).arch
    params = {n: p[0] for n, p in arch.init_stacked([seed]).items()}  # (1, ...) -> (...)
    return Start(MemberTensors(cell["architecture"], cell["arch_config"], params), f"init:{seed}")


def unseen_seeds(taken: Mapping[int, str], n: int, first: int = 0) -> list[int]:
    """The first `n` seeds from `first` on that no training member used."""
    out, seed = [], first
    while len(out) < n:
        if seed not in taken:
            out.append(seed)
        seed += 1
    return out


# ---------------------------------------------------------------------------- updates
def start_conditions(meta: Mapping, metrics: Mapping[str, torch.Tensor]) -> tuple[dict, list[list[str]]]:
    """The model's start_* conditions from the starts' measured metrics, clipped into the trained range.

    Returns:
        (name -> list of values, one per start; per start the names that were clipped).
    """
    values, clipped = {}, [[] for _ in range(len(next(iter(metrics.values()))))]
    for name, column in START_CONDITIONS.items():
        spec = meta["conditions"].get(name)
        if spec is None:
            continue
        lo, hi = float(spec["min"]), float(spec["max"])
        measured = metrics[column].tolist()
        values[name] = [min(max(v, lo), hi) for v in measured]
        for i, v in enumerate(measured):
            if not lo <= v <= hi:
                clipped[i].append(name)
    return values, clipped


def update_chain(
    model: Model,
    starts: Sequence[Start],
    conditions: Mapping[str, Any],
    num: int,
    updates: int,
    data: TaskData,
    options: SampleOptions | None = None,
    on_round: Callable[[int, list[MemberTensors]], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> list[MemberTensors]:
    """Apply a pairs model `updates` times: `num` networks, update k + 1 from update k's outputs.

    Args:
        model: the loaded (denoiser, scheduler, tokenizer, meta) of a pairs model.
        starts: one start for all networks, or one per network.
        conditions: the prompt (e.g. {"test_loss": 0.3}, or lists of `num` values); the start_*
            conditions are measured, never given.
        num: networks per update.
        updates: K >= 1.
        data: the task the starts are measured on.
        options: how to draw; update k uses seed options.seed + k - 1.
        on_round: called as on_round(k, outputs) after each update (e.g. to evaluate it).
        on_step: progress, as for `sample` (per update).

    Returns:
        The K * num outputs, update by update: row (k - 1) * num + i is network i's k-th update, with
        extra["update"] = k and extra["start"] = {"ref", "row" (the previous update's row, or None),
        "test_loss", "test_acc", "clipped"}.
    """
    options = (options or SampleOptions()).resolved(pairs=True)
    meta = model[3]
    if meta.get("mode") != "pairs":
        raise ConfigError(
            "start", "the model was trained on single checkpoints (data mode checkpoints): it takes no start"
        )
    check_int(updates, "updates")
    given = sorted(set(conditions) & set(START_CONDITIONS))
    if given:
        raise ConfigError(f"conditions.{given[0]}", "is measured on the start: leave it out")
    if len(starts) not in (1, num):
        raise ConfigError("start", f"{len(starts)} starts for {num} networks (give 1 or {num})")
    refs = [s.ref for s in starts] * (num if len(starts) == 1 else 1)
    current = [s.member for s in starts] * (num if len(starts) == 1 else 1)
    prompts = expand_prompts(conditions, num)
    out: list[MemberTensors] = []
    for k in range(1, updates + 1):
        metrics = evaluate(current, data)
        measured, clipped = start_conditions(meta, metrics)
        prompt = {name: [p[name] for p in prompts] for name in prompts[0]} | measured
        drawn = sample(
            None, prompt, num, dataclasses.replace(options, seed=options.seed + k - 1), current,
            on_step=on_step, model=model,
        )  # fmt: skip
        for i, m in enumerate(drawn):
            m.extra = {
                **m.extra,
                "update": k,
                "start": {
                    "ref": refs[i],
                    "row": None if k == 1 else (k - 2) * num + i,
                    "test_loss": float(metrics["test_loss"][i]),
                    "test_acc": float(metrics["test_acc"][i]),
                    "clipped": clipped[i],
                },
            }
        if on_round:
            on_round(k, drawn)
        out += drawn
        current = drawn
    return out


# ---------------------------------------------------------------------------- updates -> a zoo
def update_zoo(
    model_dir: str | Path,
    out: str | Path,
    starts: Sequence[Start],
    conditions: Mapping[str, Any],
    num: int,
    updates: int = 1,
    options: SampleOptions | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[Path, bool]:
    """Update starting networks with a pairs model K times and write every update as a zoo.

    Args:
        model_dir: a pairs model folder.
        out: the generated zoo's folder: num * updates rows, update by update (see `update_chain`),
            each with its start in extra["start"] and step = its update number.
        starts, conditions, num, updates, options, on_step: as for `update_chain`.

    Returns:
        (out, whether anything was sampled: False when `out` already held this generation).
    """
    options = (options or SampleOptions()).resolved(pairs=True)
    meta = read_meta(model_dir)
    if meta.get("mode") != "pairs":
        raise ConfigError(
            "start",
            f"{model_dir} was trained on single checkpoints (data mode checkpoints): it takes no start",
        )
    task = resolve_task(meta, conditions)
    task_options = task_options_of(meta)
    description = {  # spec.json: its hash names the zoo
        "model": str(model_dir),
        "conditions": dict(conditions),
        "num": num,
        "updates": updates,
        "start": [s.ref for s in starts],
        "steps": options.steps,
        **({"timestep_spacing": options.timestep_spacing} if options.timestep_spacing != "leading" else {}),
        **({"guidance_interval": list(options.guidance_interval)} if options.guidance_interval else {}),
        "guidance": options.guidance,
        "seed": options.seed,
        "temperature": options.temperature,
        "task": task,
        "task_options": task_options,
    }
    if store.check_described_zoo(Path(out), description, "generation"):
        return Path(out), False
    data = load_task(task, **task_options)
    members = update_chain(
        load_model(model_dir), starts, conditions, num, updates, data, options, on_step=on_step
    )
    return write_generated(out, members, description, task, task_options, data), True
