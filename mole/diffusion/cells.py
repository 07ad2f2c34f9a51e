"""Which network each draw of a model is: the cells the model trained on, picked by the prompt.

A cell (as in the generality matrix of docs/design.md, down to the network's shape) is what a zoo
row's network is and what it runs on: (architecture, arch_config, task, task_options). mole.json
lists those of the rows a model trained on ("cells", each with the
variants seen with it; mole.diffusion.datamodule). A model of one zoo of one shape has one, and every
draw is of it. A mixed model (several zoos, or a zoo whose neuron_pruned members are narrower) has
several, and each prompt picks one by
    architecture, task   categorical conditions of the denoiser as well, so it is told what it draws
    variant              keeps the cells seen with that variant (neuron_pruned: the narrower shape)
    arch_options         not a condition: options the cell's arch_config must hold, e.g.
                         {"hidden": [32, 32]}, for an architecture seen in several shapes on one task
Exactly one cell must remain: none is a one-line ConfigError naming what the model never saw,
several a one-line ConfigError listing the choices. The picked cell's architecture and task are
written into the prompt (the denoiser is told them, as `fill_constants` does for constant conditions),
and arch_options is taken out of it (the network's own arch_options column records the shape).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from mole.errors import ConfigError

SHAPE_KEY = "arch_options"  # the prompt key that names a shape among several of one architecture
TOLD = ("architecture", "task")  # what a picked cell writes into the prompt
TASK_FREE = ("input_shape", "num_classes")  # arch_config entries the task fixes (left out of names)


def cells_of(meta: Mapping) -> list[dict]:
    """mole.json's cells; for a model folder written before they were listed, its one
    architecture and task (variants unknown: None)."""
    if meta.get("cells"):
        return [dict(s) for s in meta["cells"]]
    task = meta.get("task")
    return [
        {
            "architecture": meta["architecture"],
            "arch_config": meta["arch_config"],
            "task": task if isinstance(task, str) else None,
            "task_options": {},
            "variants": None,
        }
    ]


def describe(cell: Mapping) -> str:
    """'mlp {"hidden": [32, 32]} on digits': how errors and reports name a cell."""
    options = {k: v for k, v in cell["arch_config"].items() if k not in TASK_FREE}
    return f"{cell['architecture']} {json.dumps(options, sort_keys=True)} on {cell['task']}"


def pick(meta: Mapping, prompt: dict) -> int:
    """The index (into cells_of(meta)) of the cell a prompt asks for; fills the prompt's
    architecture and task from it and takes arch_options out (see the module docstring).

    Args:
        meta: mole.json of the model.
        prompt: one network's conditions (changed in place).
    """
    cells = cells_of(meta)
    left = list(range(len(cells)))
    for key in (*TOLD, "variant"):  # a value outside the vocabulary: the error encode_conditions gives
        vocab = meta.get("conditions", {}).get(key, {}).get("vocab")
        if key in prompt and vocab is not None and prompt[key] not in vocab:
            raise ConfigError(
                f"conditions.{key}", f"unknown value {prompt[key]!r}; valid: {', '.join(map(str, vocab))}"
            )
    for key in TOLD:
        if key in prompt:
            seen = sorted({str(s[key]) for s in cells})
            if prompt[key] not in seen:
                raise ConfigError(
                    f"conditions.{key}",
                    f"the model never trained on {prompt[key]!r}; it saw {', '.join(seen)}",
                )
            left = [i for i in left if cells[i][key] == prompt[key]]
    shape = prompt.pop(SHAPE_KEY, None)
    if shape is not None:
        if not isinstance(shape, Mapping):
            raise ConfigError(f"conditions.{SHAPE_KEY}", f"must be a mapping of options, got {shape!r}")
        left = [i for i in left if all(cells[i]["arch_config"].get(k) == v for k, v in shape.items())]
    if "variant" in prompt:
        left = [i for i in left if prompt["variant"] in (cells[i]["variants"] or [prompt["variant"]])]
    named = {k: prompt[k] for k in (*TOLD, "variant") if k in prompt}
    asked = ", ".join(f"{k}={json.dumps(v)}" for k, v in {**named, SHAPE_KEY: shape}.items() if v is not None)
    if not left:
        raise ConfigError(
            "conditions",
            f"the model never trained on a network of {asked}; it saw {'; '.join(map(_seen, cells))}",
        )
    if len(left) > 1:
        raise ConfigError(
            "conditions",
            f"{len(left)} shapes fit {asked or 'the prompt'}: prompt one by architecture, task, variant or "
            f"{SHAPE_KEY}: {'; '.join(_seen(cells[i]) for i in left)}",
        )
    chosen = cells[left[0]]
    for key in TOLD:
        if key in meta.get("conditions", {}) and chosen[key] is not None:
            prompt.setdefault(key, chosen[key])
    return left[0]


def _seen(cell: Mapping) -> str:
    variants = cell.get("variants")
    return describe(cell) + (f" ({', '.join(variants)})" if variants else "")


def cell_seed(seed: int, index: int, count: int) -> int:
    """The noise seed of cell `index` of a model of `count`: the seed itself for a model of one;
    else a hash of both, so the draws of one cell do not depend on what else was prompted, and
    two cells never share a noise stream."""
    if count == 1:
        return int(seed)
    return int.from_bytes(hashlib.sha256(f"{seed}/{index}".encode()).digest()[:7], "little")


def one_cell(meta: Mapping, per_net: list[dict]) -> dict:
    """The one cell a set of prompts picks (a generated zoo holds networks of one architecture,
    shape and task), else a one-line ConfigError listing those they pick.

    Args:
        meta: mole.json of the model.
        per_net: one prompt per network (left unchanged).
    """
    cells = cells_of(meta)
    picked = sorted({pick(meta, dict(p)) for p in per_net})
    if len(picked) > 1:
        raise ConfigError(
            "conditions",
            f"a generated zoo holds one architecture and task, these prompts pick {len(picked)} "
            f"({'; '.join(describe(cells[i]) for i in picked)}): sample each into a zoo of its own",
        )
    return cells[picked[0]]
