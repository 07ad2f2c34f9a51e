"""`sample`: draw networks from a trained denoiser (DDIM, classifier-free guidance), then project them.

Weights target: a batch of noise tokens x_T (B, T, D) runs through DDIMScheduler's
`set_timesteps` / `step` loop built from the model's saved (DDPM) scheduler config; every step
calls the denoiser with the conditions and, for guidance g != 1, again without them (every
condition left out, so each gets its null embedding): pred = uncond + g * (cond - uncond). The
clean tokens are denormalised with the tokenizer's statistics, detokenized into params-only members
of the model's architecture, and projected onto the prompted sparsity / bit grid / rank
(mole.diffusion.project).

Mask target: one pass, no noise (see mole.diffusion.denoiser): the frozen random weights enter as
context tokens, the output is a logit per weight, and top-k over each layer's logits gives exactly
the prompted sparsity; the effective params are init * mask. The frozen weights come from given
members (a supermask row's init_params) or are drawn per network from the seed with
supermask.frozen_init.

Prompts are validated against the model's trained vocabularies and ranges (mole.diffusion.conditioning);
conditions the model only ever saw with one value (task, architecture, sparsity 0 in a dense zoo)
are filled in at that value (see `fill_constants`), the others left out get their null embedding.

Everything random is drawn from one torch.Generator seeded with `seed`, so a seed gives the same
networks bit for bit (on one machine); the noise of network i does not depend on the batch size.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import DDIMScheduler

from mole.data import load_task
from mole.diffusion.conditioning import encode_conditions
from mole.diffusion.mask_prior import prior_data, prior_logits
from mole.diffusion.project import check_levels, project_members
from mole.errors import ConfigError
from mole.nets import Params
from mole.tokenizer import MemberTensors
from mole.zoo.quant import TERNARY
from mole.zoo.variants.supermask import INITS, derive_seed, frozen_init

PAIR = re.compile(r"([A-Za-z_][\w]*)=(\[[^\]]*\]|[^,\s]+)")  # key=value, value a JSON list or a word


def load(model_dir: str | Path):
    """(denoiser, scheduler, tokenizer, meta) of a model folder (the training side's load_model)."""
    from mole.diffusion.system import load_model

    return load_model(model_dir)


# ---------------------------------------------------------------------------- prompts
def expand_prompts(conditions: Mapping[str, Any], num: int, field: str = "conditions") -> list[dict]:
    """One plain prompt dict per network from scalars (shared) and lists of `num` values.

    Args:
        conditions: name -> a value or a list of `num` values.
        num: networks to draw.
        field: how errors name the mapping ("conditions", "project").
    """
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ConfigError("num", f"must be a positive integer, got {num!r}")
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


def encode_prompts(meta: Mapping, per_net: list[dict]) -> dict[str, torch.Tensor]:
    """The model's condition tensors, each (num,), validated against its trained vocabularies and
    ranges (unknown or out-of-range -> ConfigError naming the condition)."""
    names = list(dict.fromkeys(n for p in per_net for n in p))
    # "ternary" is stored (and conditioned) as 2 bits; the projection keeps the ternary grid.
    values = {n: [2 if (n == "bits" and p[n] == TERNARY) else p[n] for p in per_net] for n in names}
    encoded = encode_conditions(meta, values) if values else {}
    return {n: t.expand(len(per_net)).clone() for n, t in encoded.items()}


PROJECTED = ("sparsity", "bits", "rank")  # the constraints sampling projects onto exactly


def levels_of(prompt: Mapping) -> tuple:
    """(sparsity, bits, rank) a prompt asks to project onto (None: neutral)."""
    return prompt.get("sparsity"), prompt.get("bits"), prompt.get("rank")


# ---------------------------------------------------------------------------- the denoiser call
def guided(denoiser, x, t, cond, ids, valid, context, guidance: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + g * (cond - uncond); one pass when g == 1 or no condition.

    Args:
        denoiser: forward(x, timesteps, cond, layer_ids, token_valid, context).
        x: (B, T, D) noisy tokens; t: (B,) long timesteps.
        cond: name -> (B,) condition tensors; ids: (B, T) layer ids; valid: (B, T) bool.
        context: (B, T, C) context tokens or None.
        guidance: g.
    """
    pred = denoiser(x, t, cond, ids, valid, context)  # (B, T, D)
    if guidance == 1.0 or not cond:
        return pred
    uncond = denoiser(x, t, {}, ids, valid, context)  # every condition missing -> null embeddings
    return uncond + guidance * (pred - uncond)


# ---------------------------------------------------------------------------- sampling
@torch.no_grad()
def sample(
    model_dir: str | Path,
    conditions: Mapping[str, Any],
    num: int,
    steps: int = 50,
    guidance: float = 1.0,
    seed: int = 0,
    context: MemberTensors | Sequence[MemberTensors] | None = None,
    batch_size: int = 64,
    scope: str | None = None,
    init_scheme: str = "signed_constant",
    on_step: Callable[[int, int], None] | None = None,
    model=None,
    temperature: float = 1.0,
    project: Mapping[str, Any] | None = None,
) -> list[MemberTensors]:
    """Draw `num` networks for `conditions` and project them onto the prompted constraints.

    Args:
        model_dir: a model folder (denoiser/, scheduler/, tokenizer/, mole.json).
        conditions: name -> value, or a list of `num` values (one prompt per network); categorical
            ones by name (variant="dense"); sparsity / bits / rank are also projected onto exactly.
        num: networks to draw.
        steps: DDIM steps (weights target).
        guidance: classifier-free guidance scale g (1: conditional only, 0: unconditional).
        seed: seeds the noise (and drawn frozen inits).
        context: mask target: members whose init_params (else params) are the frozen weights, one
            for all networks or one per network; None draws them from the seed. Pairs models: the
            starting checkpoint(s).
        batch_size: networks per denoiser batch.
        scope: ranking for sparsity, "global" or "layerwise" (default: layerwise for masks, as
            edge-popup; global for weights, as the zoo's magnitude variant).
        init_scheme: frozen init drawn when `context` is None (supermask.INITS).
        temperature: scale of the initial noise (weights target; DDIM is deterministic after it):
            1 samples the learned distribution; below 1 trades diversity for typicality (0: every
            network of one prompt is the same, the model's most central one).
        on_step: called as on_step(done, total) after every denoiser step of every batch (progress).
        model: an already loaded (denoiser, scheduler, tokenizer, meta) to skip loading.
        project: sparsity / bits / rank (a value, or a list of `num`) to project onto without
            conditioning on them, for a model that never saw them: e.g. a dense-only model's nets
            pruned to a sparsity by magnitude. Recorded in extra["project"].

    Returns:
        The networks, each with extra["prompt"] (its conditions) and, for masks, extra["init_seed"].
    """
    denoiser, scheduler, tok, meta = model or load(model_dir)
    per_net = expand_prompts(conditions, num)
    per_proj = expand_prompts(project or {}, num, "project")
    for name in project or {}:
        if name not in PROJECTED:
            raise ConfigError(f"project.{name}", f"cannot be projected onto; valid: {', '.join(PROJECTED)}")
        if name in conditions:
            raise ConfigError(f"project.{name}", "also given as a condition: give it once")
    target = meta.get("target", denoiser.config.target)
    scope = scope or ("layerwise" if target == "mask" else "global")
    if scope not in ("global", "layerwise"):
        raise ConfigError("scope", f"unknown {scope!r}; valid: global, layerwise")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not 0 <= temperature <= 2
    ):
        raise ConfigError("temperature", f"must be a number in [0, 2], got {temperature!r}")
    for name, value in (("batch_size", batch_size), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(name, f"must be a positive integer, got {value!r}")
    arch = MemberTensors(meta["architecture"], meta["arch_config"], {}).arch
    fill_constants(meta, per_net)
    if target == "mask" and any("sparsity" not in p for p in per_net):
        raise ConfigError(
            "conditions.sparsity", "required for a mask model (the fraction of weights removed)"
        )
    cond = encode_prompts(meta, per_net)
    wanted = [{**p, **q} for p, q in zip(per_net, per_proj)]  # what each net is projected onto
    for w in wanted:  # every level is checked before any denoiser step
        check_levels(arch, *levels_of(w))
    total = -(-num // batch_size) * (1 if target == "mask" else steps)  # denoiser steps, all batches
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if on_step:
            on_step(done[0], total)

    if target == "mask":
        members, scores, inits = _sample_masks(
            denoiser, tok, meta, cond, per_net, seed, context, batch_size, guidance, init_scheme, tick
        )
    else:
        members = _sample_weights(
            denoiser, scheduler, tok, meta, cond, num, steps, guidance, seed, context, batch_size, tick,
            temperature,
        )  # fmt: skip
        scores = inits = None
    for m, p, q in zip(members, per_net, per_proj):
        m.extra = {**m.extra, "prompt": p, **({"project": q} if q else {})}
    levels = list(zip(*(levels_of(w) for w in wanted)))
    return project_members(members, *levels, scope=scope, scores=scores, inits=inits)


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


def _context_members(context, num: int) -> list[MemberTensors] | None:
    if context is None:
        return None
    members = [context] if isinstance(context, MemberTensors) else list(context)
    if len(members) not in (1, num):
        raise ConfigError("context", f"{len(members)} members for {num} networks (give 1 or {num})")
    return members * num if len(members) == 1 else members


def _sample_weights(
    denoiser, scheduler, tok, meta, cond, num, steps, guidance, seed, context, batch_size, on_step,
    temperature=1.0,
):  # fmt: skip
    """DDIM over params-only token grids of the model's architecture -> unprojected members."""
    layout = tok.plan(meta["architecture"], meta["arch_config"], [], None)
    t_len, d = layout["shape"]
    if denoiser.config.token_dim != d:
        raise ConfigError(
            "model", f"the denoiser takes {denoiser.config.token_dim} channels, its tokenizer makes {d}"
        )
    ddim = DDIMScheduler.from_config(scheduler.config)
    ddim.set_timesteps(steps)
    gen = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(num, t_len, d, generator=gen) * (
        ddim.init_noise_sigma * temperature
    )  # (N, T, D), all drawn up front
    ids = tok.layer_ids(layout)  # (T,)
    starts = _context_members(context, num)
    out = []
    for lo in range(0, num, batch_size):
        hi = min(num, lo + batch_size)
        b = hi - lo
        x = noise[lo:hi].clone()  # (B, T, D)
        c = {n: v[lo:hi] for n, v in cond.items()}
        ctx = None if starts is None else torch.stack([_start_tokens(tok, meta, m) for m in starts[lo:hi]])
        valid = torch.ones(b, t_len, dtype=torch.bool)
        for t in ddim.timesteps:
            ts = torch.full((b,), int(t), dtype=torch.long)
            pred = guided(denoiser, x, ts, c, ids.expand(b, -1), valid, ctx, guidance)
            x = ddim.step(pred, t, x, generator=gen).prev_sample  # (B, T, D)
            on_step(1)
        for i in range(b):
            tokens = tok.denormalize(x[i], layout) if meta.get("normalized", True) else x[i]
            out.append(tok.detokenize(tokens, layout))
    return out


def _start_tokens(tok, meta, member: MemberTensors) -> torch.Tensor:
    """(T, D) normalised tokens of a starting checkpoint (G.pt pairs models), params only."""
    plain = member.replace(mask=None, init_params=None, codes=None, scales=None, factors=None)
    raw, lay = tok.tokenize(plain)
    return tok.normalize(raw, lay) if meta.get("normalized", True) else raw


def _frozen_inits(arch, context, num, seed, init_scheme) -> tuple[list[Params], list[int | None]]:
    """Per network frozen weights {name: tensor} (from context members or drawn) and their seeds."""
    given = _context_members(context, num)
    if given is not None:
        for m in given:
            if (m.architecture, m.arch_config) != (arch.name, arch.config()):
                raise ConfigError("context", f"{m.signature()} is not the model's architecture")
        return [m.init_params if m.init_params is not None else m.params for m in given], [None] * num
    if init_scheme not in INITS:
        raise ConfigError("init_scheme", f"unknown {init_scheme!r}; valid: {', '.join(INITS)}")
    seeds = [derive_seed(seed, "init", i) for i in range(num)]
    drawn = frozen_init(arch, seeds, init_scheme)  # (N, ...), one generator per network
    return [{n: p[i] for n, p in drawn.items()} for i in range(num)], seeds


def _sample_masks(
    denoiser, tok, meta, cond, per_net, seed, context, batch_size, guidance, init_scheme, on_step
):
    """One denoiser pass per batch over frozen inits -> members (params = init) and their logits."""
    num = len(per_net)
    ch = meta.get("channels") or denoiser.config.channels
    arch = MemberTensors(meta["architecture"], meta["arch_config"], {}).arch
    inits, seeds = _frozen_inits(arch, context, num, seed, init_scheme)
    prior = meta.get("mask_prior")
    if prior is not None:  # the logits are a correction of the least-squares construction's scores
        from mole.diffusion.generated import task_options_of

        x, y = prior_data(load_task(meta["task"], **task_options_of(meta)), prior["inputs"])
    members, scores = [], []
    for lo in range(0, num, batch_size):
        hi = min(num, lo + batch_size)
        grids = []
        for init in inits[lo:hi]:
            ones = {n: torch.ones_like(p, dtype=torch.bool) for n, p in init.items()}
            m = MemberTensors(arch.name, arch.config(), dict(init), mask=ones, init_params=dict(init))
            raw, layout = tok.tokenize(m)  # (T, D); layout["perm"] undoes a canonical order
            grids.append((raw, layout))
        raw = torch.stack([g[0] for g in grids])  # (B, T, D)
        norm = (
            torch.stack([tok.normalize(r, lay) for r, lay in grids]) if meta.get("normalized", True) else raw
        )
        context_tokens = norm[..., slice(*ch["init_params"])]  # (B, T, w) the frozen weights' channels
        b, t_len = raw.shape[:2]
        ids = torch.stack([tok.layer_ids(lay) for _, lay in grids])  # (B, T)
        valid = torch.ones(b, t_len, dtype=torch.bool)
        zeros = torch.zeros(b, dtype=torch.long)  # the mask predictor ignores timesteps
        c = {n: v[lo:hi] for n, v in cond.items()}
        logits = guided(
            denoiser, torch.zeros_like(context_tokens), zeros, c, ids, valid, context_tokens, guidance
        )
        on_step(1)
        if prior is not None:
            stacked = {n: torch.stack([init[n] for init in inits[lo:hi]]) for n in inits[lo]}
            sparsity = torch.tensor([float(p["sparsity"]) for p in per_net[lo:hi]])
            added = prior_logits(arch, stacked, sparsity, x, y, prior)
        for i, (r, lay) in enumerate(grids):
            # Logit k of a token scores the weight at params column k: write them there and let the
            # layout read them back per tensor (and undo a canonical neuron order).
            grid = r.clone()
            grid[:, slice(*ch["params"])] = logits[i]
            read = tok.detokenize(grid, lay)
            scores.append(
                {n: read.params[n] + (added[n][i] if prior is not None else 0) for n in arch.weight_names()}
            )
            members.append(MemberTensors(arch.name, arch.config(), dict(inits[lo + i])))
    for m, s in zip(members, seeds):
        if s is not None:
            m.extra["init_seed"] = s
    return members, scores, inits
