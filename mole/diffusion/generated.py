"""Generated members in the zoo format: evaluate them on their task and write shards + manifest.

A generated zoo is an ordinary zoo folder (mole.zoo.store): spec.json describes the generation
(model folder, conditions, number, steps, guidance, seed, task) and its hash names the zoo,
shards hold one row per network with `variant = "generated"` and `variant_config` = the network's
prompt plus guidance / steps / seed, and every tensor column follows the store's contract (params
are the effective parameters; mask / init_params / codes + scales / factors as the projection made
them). Metrics come from the architecture's stacked forward on the task's train / val / test splits,
as for trained members. As in `mole zoo build`, the spec is written first, each shard atomically,
and the manifest last, so a killed run leaves nothing that counts and the same command redoes it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from mole.data import TaskData, load_task
from mole.diffusion.cells import one_cell
from mole.diffusion.model_dir import load_model, read_meta, task_options_of
from mole.diffusion.options import SampleOptions, check_candidates, pairs_model
from mole.diffusion.prompts import expand_prompts
from mole.diffusion.sample import sample
from mole.errors import ConfigError
from mole.io import read_json, write_json
from mole.tokenizer import MemberTensors
from mole.zoo import pruning, store
from mole.zoo.train import evaluate_stacked

VARIANT = "generated"


def resolve_task(meta: Mapping[str, Any], conditions: Mapping[str, Any]) -> str:
    """The task generated networks are evaluated on: the model's, or the prompted one."""
    task = conditions.get("task", meta.get("task"))
    if isinstance(task, (list, tuple)):
        if len(set(task)) != 1:
            raise ConfigError("conditions.task", f"the model knows several tasks {list(task)}: prompt one")
        task = task[0]
    if not isinstance(task, str):
        raise ConfigError("conditions.task", f"cannot tell which task to evaluate on (got {task!r})")
    return task


def prompted_task(meta: Mapping[str, Any], conditions: Mapping[str, Any], num: int) -> str:
    """The task `num` nets drawn for `conditions` are evaluated on: a mixed model's prompted cell's,
    else `resolve_task`'s."""
    return one_cell(meta, expand_prompts(conditions, num))["task"] or resolve_task(meta, conditions)


# ---------------------------------------------------------------------------- records
def evaluate(members: Sequence[MemberTensors], data: TaskData) -> dict[str, torch.Tensor]:
    """Train / val / test loss and accuracy of members of one architecture, stacked: name -> (K,)."""
    arch = members[0].arch
    params = {n: torch.stack([m.params[n] for m in members]) for n in members[0].params}  # (K, ...)
    return evaluate_stacked(arch.forward_stacked, params, data)


def records(
    members: Sequence[MemberTensors],
    metrics: Mapping[str, torch.Tensor],
    description: Mapping[str, Any],
    name: str,
    task: str,
    task_options: Mapping[str, Any],
) -> list[dict]:
    """One zoo row per generated member (see mole.zoo.store.SCHEMA)."""
    digest = store.description_hash(description)
    run = {
        k: description[k]
        for k in (
            "guidance",
            "steps",
            "seed",
            "temperature",
            "extrapolate",
            "timestep_spacing",
            "guidance_interval",
        )
        if k in description
    }
    out = []
    for i, m in enumerate(members):
        row, prompt, project = m.to_row(), m.extra.get("prompt", {}), m.extra.get("project", {})
        weights = m.arch.weight_names()
        sparsity = 0.0
        extra: dict[str, Any] = {"prompt": prompt, "model": description.get("model"), **run}
        if project:
            extra["project"] = project
        wanted = {**prompt, **project}  # the levels it was projected onto
        if m.mask is not None:
            masks = {n: m.mask[n][None] for n in weights}  # (1, *shape)
            sparsity = float(pruning.sparsity_of(masks)[0])
            extra["layer_sparsity"] = {n: float(v[0]) for n, v in pruning.layer_sparsity(masks).items()}
        if m.factors is not None:
            extra["factor_shapes"] = row["factor_shapes"]
        for key in ("init_seed", "sampling_seconds", "update", "start", "structure"):
            if key in m.extra:
                extra[key] = m.extra[key]
        bits = wanted.get("bits") if m.codes is not None else None
        rank = None
        if m.factors is not None:  # the prompted rank; else the widest U factor's
            rank = wanted.get("rank") or max(d[1] for n, d in row["factor_shapes"] if n.endswith(".U"))
        out.append(
            {
                "zoo": name,
                "member_id": f"{name}-{digest[:8]}-{i:05d}-{VARIANT}",
                "member_index": i,
                "variant": VARIANT,
                "variant_config": json.dumps({**wanted, **run}, sort_keys=True),
                "task": task,
                "task_options": json.dumps(dict(task_options), sort_keys=True),
                "architecture": m.architecture,
                "arch_options": row["arch_options"],
                "seed": int(description.get("seed", 0)),
                "step": int(m.extra.get("update", 0)),  # a pairs model's update number
                "final": True,
                **{k: float(v[i]) for k, v in metrics.items()},
                "num_params": int(row["params"].size),
                "nonzero_params": int((row["params"] != 0).sum()),
                "sparsity": sparsity,
                "bits": None if bits is None else (2 if bits == "ternary" else int(bits)),
                "rank": None if rank is None else int(rank),
                **{k: row[k] for k in ("params", "mask", "init_params", "codes", "scales", "factors")},
                "extra": json.dumps(extra, sort_keys=True, default=str),
            }
        )
    return out


def write_generated(
    out: str | Path,
    members: Sequence[MemberTensors],
    description: Mapping[str, Any],
    task: str,
    task_options: Mapping[str, Any] | None = None,
    data: TaskData | None = None,
) -> Path:
    """Evaluate generated members and write them as a zoo folder.

    Args:
        out: the zoo folder (created; must be empty, or hold this same generation).
        members: the generated, projected members (one architecture).
        description: what produced them (model, conditions, num, steps, guidance, seed, ...);
            written to spec.json, its hash names the zoo and the member ids.
        task: TASKS name the networks are evaluated on.
        task_options: its options (the training zoo's, so the splits are the same).
        data: the loaded task (skips loading it).
    """
    out = Path(out)
    if not members:
        raise ConfigError("num", "no members to write")
    task_options = dict(task_options or {})
    description = {**description, "task": task, "task_options": task_options}
    if store.check_described_zoo(out, description, "generation"):
        return out
    data = data if data is not None else load_task(task, **task_options)
    metrics = evaluate(members, data)
    name = str(description.get("name") or out.name)
    rows = records(members, metrics, description, name, task, task_options)
    return store.write_described_zoo(out, rows, description, "generated")


# ---------------------------------------------------------------------------- sample + write
def generate_zoo(
    model_dir: str | Path,
    out: str | Path,
    conditions: Mapping[str, Any],
    num: int,
    options: SampleOptions | None = None,
    context: MemberTensors | Sequence[MemberTensors] | None = None,
    context_ref: str | None = None,
    project: Mapping[str, Any] | None = None,
    task_options: Mapping[str, Any] | None = None,
    on_step=None,
) -> tuple[Path, bool]:
    """Sample networks (mole.diffusion.sample.sample) and write them as a zoo in `out`.

    Args:
        model_dir, conditions, num, options, context, project, on_step: as for `sample`.
        out: the generated zoo's folder.
        context_ref: how `context` was chosen (e.g. "ZOO:MEMBER"), recorded in spec.json.
        task_options: options of the evaluation task (default: the training zoo's, from its spec.json).

    Returns:
        (out, whether anything was sampled: False when `out` already held this generation).
    """
    meta = read_meta(model_dir)
    options = (options or SampleOptions()).resolved(pairs_model(meta))
    task = prompted_task(meta, conditions, num)
    task_options = dict(task_options) if task_options is not None else task_options_of(meta, task)
    description = {  # spec.json: its hash names the zoo, so these keys and values stay as they are
        "model": str(model_dir),
        "conditions": dict(conditions),
        "num": num,
        "steps": options.steps,
        "guidance": options.guidance,
        "seed": options.seed,
        **(
            {"temperature": options.temperature} if options.temperature != 1.0 else {}
        ),  # 1.0: as before it existed
        **({"extrapolate": True} if options.extrapolate else {}),  # the same: as before it existed
        **({"channels": True} if options.channels else {}),  # the same
        **({"timestep_spacing": options.timestep_spacing} if options.timestep_spacing != "leading" else {}),
        **({"guidance_interval": list(options.guidance_interval)} if options.guidance_interval else {}),
        **({"project": dict(project)} if project else {}),
        "scope": options.scope,
        "init": context_ref or (options.init_scheme if meta.get("target") == "mask" else None),
        "task": task,
        "task_options": task_options,
    }
    if store.check_described_zoo(Path(out), description, "generation"):  # fails fast, before sampling
        return Path(out), False
    model = load_model(model_dir)
    t0 = time.perf_counter()
    members = sample(model_dir, conditions, num, options, context, project, on_step, model)
    share = (time.perf_counter() - t0) / max(len(members), 1)  # sampling alone: no loading or writing
    for m in members:
        m.extra = {**m.extra, "sampling_seconds": share}
    return write_generated(out, members, description, task, task_options), True


# ---------------------------------------------------------------------------- steps chosen on validation
STEPS_RECORD = "steps.json"  # beside a recipe's generated sets: the step count chosen for them


def candidate_options(options: SampleOptions, candidate: int | Mapping[str, Any]) -> SampleOptions:
    """The options one candidate of a recipe's `weights.steps` list draws with: a count at the
    recipe's own spacing, or a mapping of `steps` and `timestep_spacing` (see `check_candidates`)."""
    if isinstance(candidate, Mapping):
        return replace(options, **candidate)
    return replace(options, steps=candidate)


def choose_steps(
    model_dir: str | Path,
    conditions: Mapping[str, Any],
    num: int,
    options: SampleOptions,
    candidates: Sequence[int | Mapping[str, Any]],
    record: str | Path | None = None,
) -> tuple[int | dict[str, Any], dict[str, list[float]]]:
    """The DDIM steps, among `candidates`, whose draws clearly come closest to their prompts on validation.

    How many steps draw the best nets, and where they lie, depends on the model: on one it is the
    first x0 read at t=999 (one step with `timestep_spacing: trailing`), on another five leading
    steps (ledger X39). So a recipe can leave the choice to this rule, written once: `num` nets are
    drawn for `conditions` at each candidate, with the same seed, prompts and other options, and
    scored on the validation split (the test split is never read): by how far each net's validation
    accuracy lies from its accuracy prompt, or, with no accuracy prompted, by the accuracy itself.
    The first candidate is the recipe's own; a later one replaces the one kept so far only when its
    nets beat it by more than two standard errors of the paired per-net difference (same prompt,
    same noise). Accuracy alone is not the score: on the digits / MLP cell one trailing step drew
    more accurate nets for the top prompts (+0.006 on validation) and missed the low ones (B3's MAE
    0.121 -> 0.224, X39), so a recipe's conditions should hold prompts across the range.

    Args:
        model_dir: a weights model folder.
        conditions, num: as for `sample` (e.g. one prompt per SGD member and B3's sweep).
        options: every other sampling option (its `steps` is ignored, and its `timestep_spacing`
            where a candidate names its own).
        candidates: step counts (at `options`' spacing) or {steps, timestep_spacing} mappings, the
            preferred first.
        record: a JSON file that keeps the choice; read back when it holds one made for the same
            arguments, written (atomically) otherwise.

    Returns:
        (the chosen candidate, as given; per candidate, the mean validation accuracy of its draws
        ("val_acc") and, when accuracy is prompted, their mean distance from it ("val_error")).
    """
    check_candidates(candidates)
    options = options.resolved()  # a weights model of single checkpoints: the spacing a count is at
    asked = {
        "model": str(model_dir), "conditions": dict(conditions), "num": num, "candidates": list(candidates),
        "options": {k: v for k, v in options.recorded().items() if k != "steps"},
    }  # fmt: skip
    asked = json.loads(json.dumps(asked))  # tuples as lists, as read back
    if record is not None and Path(record).is_file():
        kept = read_json(Path(record), "steps chosen on validation")
        if kept.get("asked") == asked and isinstance(kept.get("figures"), dict):
            return candidates[int(kept["chosen"])], kept["figures"]
    meta = read_meta(model_dir)
    task = prompted_task(meta, conditions, num)
    data = load_task(task, **task_options_of(meta, task))
    model = load_model(model_dir)
    prompt = conditions.get("test_acc")
    if prompt is not None:
        prompt = torch.as_tensor(prompt, dtype=torch.float64).expand(num)
    accs, drawn = [], {}
    for c in candidates:
        drawing = candidate_options(options, c)
        if drawing not in drawn:  # the same draws twice: score them once
            nets = sample(model_dir, conditions, num, drawing, model=model)
            drawn[drawing] = evaluate(nets, data)["val_acc"].double()
        accs.append(drawn[drawing])
    scores = accs if prompt is None else [-(a - prompt).abs() for a in accs]  # higher is better
    chosen = 0
    for i, score in enumerate(scores):
        gain = score - scores[chosen]
        if len(gain) > 1 and gain.mean() > 2 * gain.std() / math.sqrt(len(gain)):
            chosen = i
    figures = {"val_acc": [float(a.mean()) for a in accs]}
    if prompt is not None:
        figures["val_error"] = [float(-s.mean()) for s in scores]
    if record is not None:
        write_json(Path(record), {"asked": asked, "chosen": chosen, "candidate": asked["candidates"][chosen],
                                  "figures": figures})  # fmt: skip
    return candidates[chosen], figures


def recipe_steps(
    model_dir: str | Path, weights: Mapping[str, Any], conditions: Mapping[str, Any], num: int, seed: int,
    folder: str | Path,
) -> dict[str, Any]:  # fmt: skip
    """A sampling recipe's weights options (configs/quickstart/sample.yaml's `weights`) with one step
    count: a list of candidates is resolved by `choose_steps` on `conditions` (num nets at `seed`;
    prompts across the accuracy range, see there), the choice kept in folder/STEPS_RECORD; a single
    count is returned as it is."""
    if not isinstance(weights.get("steps"), list):
        return dict(weights)
    options = SampleOptions(**{**weights, "steps": 1, "seed": seed})
    record = Path(folder) / STEPS_RECORD
    chosen, _ = choose_steps(model_dir, conditions, num, options, weights["steps"], record)
    return {**weights, **(dict(chosen) if isinstance(chosen, Mapping) else {"steps": chosen})}
