"""What each sampled network is asked for: prompts (parsed, expanded, filled, encoded), the members
given as context, and classifier-free guidance over the conditions. Shared by both samplers
(mole.diffusion.sample, mole.masks.sample)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from mole.conditions import FLOAT32_BITS, TERNARY_BITS
from mole.diffusion.conditioning import encode_conditions
from mole.errors import ConfigError, check_int
from mole.tokenizer import MemberTensors
from mole.zoo.quant import TERNARY

PAIR = re.compile(r"([A-Za-z_][\w]*)=(\[[^\]]*\]|[^,\s]+)")  # key=value, value a JSON list or a word
PROJECTED = ("sparsity", "bits", "rank")  # the constraints sampling projects onto exactly


def expand_prompts(conditions: Mapping[str, Any], num: int, field: str = "conditions") -> list[dict]:
    """One plain prompt dict per network from scalars (shared) and lists of `num` values.

    Args:
        conditions: name -> a value or a list of `num` values.
        num: networks to draw.
        field: how errors name the mapping ("conditions", "project").
    """
    check_int(num, "num")
    if not isinstance(conditions, Mapping):
        raise ConfigError(field, f"must be a mapping of name -> value, got {type(conditions).__name__}")
    per_net: list[dict] = [{} for _ in range(num)]
    for name, value in conditions.items():
        values = list(value) if isinstance(value, (list, tuple)) else [value] * num
        if len(values) != num:
            raise ConfigError(f"{field}.{name}", f"{len(values)} values for {num} networks")
        for p, v in zip(per_net, values):
            p[name] = v
    return per_net


def parse_conditions(text: str) -> dict[str, Any]:
    """Conditions from the command line: a JSON object, or key=value pairs separated by commas or
    spaces (values read as JSON when they parse, else as strings: variant=dense, test_acc=0.9).

    Args:
        text: e.g. '{"test_acc": 0.95, "variant": "dense"}' or 'test_acc=0.95,variant=dense'.
    """
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError("conditions", f"not valid JSON ({e})") from None
        if not isinstance(value, dict):
            raise ConfigError("conditions", "must be a JSON object of name -> value")
        return value
    out: dict[str, Any] = {}
    for pair in PAIR.finditer(text):
        key, raw = pair.group(1), pair.group(2)
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    leftover = PAIR.sub("", text).replace(",", " ").strip()
    if leftover:
        raise ConfigError("conditions", f"cannot read {leftover.split()[0]!r}: use JSON or key=value pairs")
    return out


def fill_constants(meta: Mapping, per_net: list[dict]) -> None:
    """Prompt every condition the model saw with a single value (one vocabulary entry, or min == max:
    e.g. the task, the architecture, sparsity 0 in a dense zoo) at that value.

    In training such a condition is always present unless dropped, and dropping several conditions
    but not all is rare (see conditioning.drop_conditions), so leaving them null would condition
    on combinations the model has hardly seen. A mask model also needs its sparsity for top-k.
    """
    for name, spec in meta["conditions"].items():
        if spec["kind"] == "categorical":
            known = list(spec["vocab"]) if len(spec["vocab"]) == 1 else None
        else:
            known = [spec["min"]] if spec["min"] == spec["max"] else None
        if known is not None:
            for p in per_net:
                p.setdefault(name, known[0])


def encode_prompts(meta: Mapping, per_net: list[dict], extrapolate: bool = False) -> dict[str, torch.Tensor]:
    """The model's condition tensors, each (num,), validated against its trained vocabularies and
    ranges (unknown or out-of-range -> ConfigError naming the condition; `extrapolate`: see
    conditioning.encode_conditions)."""
    names = list(dict.fromkeys(n for p in per_net for n in p))
    ternary = ternary_bits(meta)
    values = {n: [ternary if (n == "bits" and p[n] == TERNARY) else p[n] for p in per_net] for n in names}
    encoded = encode_conditions(meta, values, extrapolate) if values else {}
    return {n: t.expand(len(per_net)).clone() for n, t in encoded.items()}


def ternary_bits(meta: Mapping) -> float:
    """The bits condition a model reads "ternary" as: TERNARY_BITS where its trained range reaches it
    (its ternary rows were conditioned so), else 2 (older models conditioned them as 2 bits, the
    stored code width). Either way the projection keeps the ternary grid."""
    spec = meta.get("conditions", {}).get("bits")
    return TERNARY_BITS if spec and spec.get("min", FLOAT32_BITS) <= TERNARY_BITS + 1e-6 else 2


def levels_of(prompt: Mapping) -> tuple:
    """(sparsity, bits, rank) a prompt asks to project onto (None: neutral)."""
    return prompt.get("sparsity"), prompt.get("bits"), prompt.get("rank")


def context_members(
    context: MemberTensors | Sequence[MemberTensors] | None, num: int
) -> list[MemberTensors] | None:
    """One context member per network (one given member repeats), or None."""
    if context is None:
        return None
    members = [context] if isinstance(context, MemberTensors) else list(context)
    if len(members) not in (1, num):
        raise ConfigError("context", f"{len(members)} members for {num} networks (give 1 or {num})")
    return members * num if len(members) == 1 else members


def unconditional(cond: dict[str, torch.Tensor], keep: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """The conditions classifier-free guidance's unconditional pass is told: only those in `keep`
    (mole.json's "cond_drop_keep"); every other one gets its null embedding. Sampling (`guided`) and
    training's guided function term (DiffusionSystem.function_guidance) both read it."""
    return {n: v for n, v in cond.items() if n in keep}


def guided(
    predict: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    cond: dict[str, torch.Tensor],
    guidance: float,
    keep: Sequence[str] = (),
) -> torch.Tensor:
    """Classifier-free guidance: uncond + g * (cond - uncond); one pass when g == 1 or no condition.

    Args:
        predict: the model's call with everything but the conditions bound: cond -> prediction.
        cond: name -> (B,) condition tensors (the unconditional pass leaves every one out, so each
            gets its null embedding, but those in `keep`).
        guidance: g.
        keep: conditions the unconditional pass keeps (a model trained with them kept in its
            all-at-once dropout: mole.json's "cond_drop_keep").
    """
    pred = predict(cond)
    if guidance == 1.0 or not cond:
        return pred
    uncond = predict(unconditional(cond, keep))
    return uncond + guidance * (pred - uncond)
