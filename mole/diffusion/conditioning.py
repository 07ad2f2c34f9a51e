"""What a denoiser is conditioned on: condition specs read from a zoo, prompt validation, dropout.

A condition spec is JSON: {"kind": "continuous", "min": lo, "max": hi} (the range seen in the
training split) or {"kind": "categorical", "vocab": [...]} (ids are positions). The same dict is the
Denoiser's `conditions` config and mole.json's "conditions", so sampling validates prompts against
exactly what the model was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from mole.conditions import BY_NAME
from mole.conditions import conditions as item_conditions
from mole.errors import ConfigError
from mole.tokenizer import MemberTensors

RANGE_SLACK = 1e-6  # relative: float32 rounding of a value at the very edge of the range still passes


# ---------------------------------------------------------------------------- from a data module
def condition_specs(dm) -> dict[str, dict]:
    """Condition name -> spec for a set-up ZooDataModule: continuous ranges over its train rows.

    Args:
        dm: a ZooDataModule (set up here if it is not yet).
    """
    dm.setup()
    train = dm.datasets["train"]
    table = train.dataset.data.table
    rows = np.asarray(train.rows, dtype=np.int64)
    specs: dict[str, dict] = {}
    for c in item_conditions(pairs=dm.mode == "pairs"):  # the table's order: continuous, pairs, categorical
        if c.kind == "categorical":
            specs[c.name] = {"kind": "categorical", "vocab": list(dm.vocab[c.column])}
            continue
        columns = {c.column, "variant_config"} & set(table.column_names)
        taken = table.select(sorted(columns)).take(rows).to_pylist() if len(rows) else []
        values = [c.value(r) for r in taken]  # nulls filled, ternary bits read as such
        values = [None if v is None else float(v) for v in values]
        values = [v for v in values if v is not None and math.isfinite(v)]
        lo, hi = (min(values), max(values)) if values else (0.0, 0.0)
        specs[c.name] = {"kind": "continuous", "min": lo, "max": hi}
    return specs


def channel_groups(tokenizer) -> dict[str, list[int]]:
    """[start, stop) columns of the params, mask and init_params channel groups of a fitted tokenizer
    that gives token space to masks and frozen inits (the supermask layout)."""
    if not {"mask", "init_params"} <= set(tokenizer.fields or []):
        raise ConfigError(
            "target", f"mask needs a tokenizer with mask and init_params fields, got {tokenizer.fields}"
        )
    layout = tokenizer.plan(tokenizer.architecture, tokenizer.arch_config, ["mask", "init_params"], None)
    start = {
        f: min(p["col"] for p in layout["placements"] if p["field"] == f)
        for f in ("params", "mask", "init_params")
    }
    w = start["mask"] - start["params"]  # the groups are equally wide, one after another
    return {f: [s, s + w] for f, s in start.items()}


def model_args(dm) -> dict[str, Any]:
    """The data-dependent arguments of the model a ZooDataModule's rows train (the CLI links them in):
    token_dim, max_tokens, num_layers_ids and conditions, plus context_dim for the Denoiser (data
    target "weights"; G.pt pairs) or channels for the MaskModel (data target "mask").

    Tokenizes one row of every (variant, variant_config, arch_options) structure, so token_dim,
    max_tokens and num_layers_ids cover every member the model will see.
    """
    cached = getattr(dm, "_model_args", None)
    if cached is not None:
        return cached
    dm.setup()
    table = dm.datasets["train"].dataset.data.table
    keys = ("variant", "variant_config", "arch_options")
    cols = {k: table.column(k).to_numpy(zero_copy_only=False) for k in keys}
    reader, seen, dims, t_max, n_layers = dm.datasets["train"], set(), set(), 0, 0
    for split in dm.datasets.values():
        for r in np.asarray(split.rows, dtype=np.int64):
            key = tuple(cols[k][r] for k in keys)
            if key in seen:
                continue
            seen.add(key)
            tokens, layout = dm.tokenizer.tokenize(MemberTensors.from_row(reader.row(r)))
            dims.add(tokens.shape[1])
            t_max, n_layers = max(t_max, tokens.shape[0]), max(n_layers, len(layout["segments"]))
    if len(dims) != 1:
        raise ConfigError("tokenizer", f"members tokenize to different widths {sorted(dims)}: refit it")
    args = {"max_tokens": t_max, "num_layers_ids": n_layers, "conditions": condition_specs(dm)}
    if getattr(dm, "target", "weights") == "mask":  # the MaskModel's: one channel group wide
        channels = channel_groups(dm.tokenizer)
        args.update(token_dim=channels["mask"][1] - channels["mask"][0], channels=channels)
    else:  # the Denoiser's: whole tokens, and a pair's starting tokens as context
        width = dims.pop()
        args.update(token_dim=width, context_dim=width if dm.mode == "pairs" else 0)
    dm._model_args = args
    return args


# ---------------------------------------------------------------------------- prompts
def encode_conditions(
    meta: Mapping, conditions: Mapping[str, Any], extrapolate: bool = False
) -> dict[str, torch.Tensor]:
    """Validate prompted conditions against a trained model's metadata and turn them into tensors.

    Scalars and lists mix: a scalar is repeated to the longest list. Conditions left out get their
    null embedding in the denoiser.

    Args:
        meta: mole.json of a model folder (or anything with its "conditions" specs).
        conditions: name -> value(s); categorical values by name (e.g. variant="supermask").
        extrapolate: let a condition with a `better` side (mole.conditions: accuracy above, loss
            below) go past the trained range on that side, up to its bound (accuracy 1, loss 0).
            The model never saw such a value: what it gives there is measured (B12), not promised.

    Returns:
        name -> (B,) tensors: float32 for continuous, int64 ids for categorical.
    """
    specs = meta["conditions"]
    out: dict[str, list] = {}
    for name, value in conditions.items():
        if name not in specs:
            raise ConfigError(f"conditions.{name}", f"unknown condition; valid: {', '.join(specs)}")
        spec = specs[name]
        values = list(value) if isinstance(value, (list, tuple, np.ndarray, torch.Tensor)) else [value]
        if spec["kind"] == "categorical":
            vocab = list(spec["vocab"])
            for v in values:
                if v not in vocab:
                    raise ConfigError(
                        f"conditions.{name}", f"unknown value {v!r}; valid: {', '.join(map(str, vocab))}"
                    )
            out[name] = [vocab.index(v) for v in values]
        else:
            lo, hi = allowed_range(name, spec, extrapolate)
            slack = RANGE_SLACK * max(1.0, abs(lo), abs(hi))
            for v in values:
                v = float(v)
                if not math.isfinite(v) or v < lo - slack or v > hi + slack:
                    raise ConfigError(f"conditions.{name}", out_of_range(v, name, spec, extrapolate))
            out[name] = [float(v) for v in values]
    sizes = {len(v) for v in out.values()} - {1}
    if len(sizes) > 1:
        raise ConfigError("conditions", f"lists of different lengths {sorted(sizes)}")
    batch = sizes.pop() if sizes else 1
    return {
        name: torch.tensor(
            v * batch if len(v) == 1 else v,
            dtype=torch.long if specs[name]["kind"] == "categorical" else torch.float32,
        )
        for name, v in out.items()
    }


def allowed_range(name: str, spec: Mapping, extrapolate: bool) -> tuple[float, float]:
    """[lo, hi] a prompt of a continuous condition may take: the trained range, widened to the
    condition's bound on its `better` side under `extrapolate`."""
    lo, hi = float(spec["min"]), float(spec["max"])
    c = BY_NAME.get(name)
    if extrapolate and c is not None and c.better is not None:
        lo, hi = (lo, max(hi, c.bound)) if c.better == "higher" else (min(lo, c.bound), hi)
    return lo, hi


def out_of_range(v: float, name: str, spec: Mapping, extrapolate: bool) -> str:
    """The one-line message of a refused continuous prompt, saying how to opt in where one may."""
    lo, hi = allowed_range(name, spec, extrapolate)
    what = (
        "the trained range" if (lo, hi) == (float(spec["min"]), float(spec["max"])) else "the allowed range"
    )
    msg = f"{v:g} is outside {what} [{lo:.4g}, {hi:.4g}]"
    c = BY_NAME.get(name)
    beyond = c is not None and c.better is not None and (v > hi if c.better == "higher" else v < lo)
    if beyond and not extrapolate and (v <= c.bound if c.better == "higher" else v >= c.bound):
        msg += " (past the zoo's best: opt in with --extrapolate true)"
    return msg


# ---------------------------------------------------------------------------- training
def drop_conditions(
    names: list[str],
    batch: int,
    p: float,
    device: torch.device | None = None,
    generator=None,
    keep: tuple[str, ...] | list[str] = (),
    each: float | None = None,
) -> dict[str, torch.Tensor]:
    """Classifier-free guidance dropout: name -> (B,) bool. Each row drops all conditions at once
    with probability p (the unconditional model guidance needs), and each condition alone with
    probability `each` (so a prompt may leave any subset out).

    Args:
        names: the denoiser's condition names.
        batch: B.
        p: cond_drop_prob.
        each: cond_drop_each, the probability of dropping each condition alone; None: p. At 0.1, a
            prompt that leaves out two conditions the zoo sets (test_acc given, test_loss and sparsity
            not) is a case one row in a hundred trains; the conditional prediction then ignored
            test_acc (ledger C37).
        device, generator: where and from what to draw.
        keep: conditions the all-at-once drop leaves in place (still dropped alone): the unconditional
            model is then told them, e.g. the architecture and task of a mixed model, whose
            unconditional prediction would otherwise be a blend of every architecture's.
    """
    alone = p if each is None else each
    if (p <= 0 and alone <= 0) or not names:
        return {}
    rand = torch.rand(len(names) + 1, batch, device=device, generator=generator)  # (K + 1, B)
    every = rand[0] < p
    return {n: (every & (n not in keep)) | (rand[i + 1] < alone) for i, n in enumerate(names)}
