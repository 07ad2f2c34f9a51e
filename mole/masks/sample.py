"""One-pass mask sampling: frozen random weights in, per-weight logits out, no noise.

The frozen weights come from given members (a supermask row's init_params, else its params) or are
drawn per network from the seed with supermask.frozen_init. They enter the model as context tokens;
its logit per weight (plus the least-squares construction's scores, for a model trained with a mask
prior) is the score that the projection's layer-wise top-k turns into exactly the prompted sparsity,
and the effective params are init * mask (mole.diffusion.sample.sample runs all of it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from mole.data import load_task
from mole.diffusion.model_dir import task_options_of
from mole.diffusion.options import SampleOptions
from mole.diffusion.prompts import context_members, guided
from mole.errors import ConfigError
from mole.masks.construction import prior_data, prior_logits
from mole.masks.model import MaskModel
from mole.nets import Architecture, Params
from mole.tokenizer import MemberTensors
from mole.zoo.variants.supermask import derive_seed, frozen_init

SCOPE = "layerwise"  # edge-popup ranks each layer on its own


def frozen_inits(
    arch: Architecture, context, num: int, seed: int, init_scheme: str
) -> tuple[list[Params], list[int | None]]:
    """Per network frozen weights {name: tensor} and their init seeds (None for given ones).

    Args:
        arch: the model's architecture.
        context: members whose init_params (else params) are the frozen weights, one for all
            networks or one per network; None draws them.
        num: networks.
        seed: the sampling seed (network i's init seed is derive_seed(seed, "init", i)).
        init_scheme: what to draw (supermask.INITS).
    """
    given = context_members(context, num)
    if given is not None:
        for m in given:
            if (m.architecture, m.arch_config) != (arch.name, arch.config()):
                raise ConfigError("context", f"{m.signature()} is not the model's architecture")
        return [m.init_params if m.init_params is not None else m.params for m in given], [None] * num
    seeds = [derive_seed(seed, "init", i) for i in range(num)]
    drawn = frozen_init(arch, seeds, init_scheme)  # (N, ...), one generator per network
    return [{n: p[i] for n, p in drawn.items()} for i in range(num)], seeds


def sample_masks(
    model: MaskModel,
    tok,
    meta: dict,
    cond: dict[str, torch.Tensor],
    per_net: list[dict],
    options: SampleOptions,
    context,
    on_step: Callable[[int], None],
) -> tuple[list[MemberTensors], list[Params], list[Params]]:
    """One model pass per batch over frozen inits: (members with params = init, their scores, inits).

    Args:
        model: the mask model.
        tok: its tokenizer; meta: its mole.json.
        cond: name -> (N,) encoded conditions; per_net: the N prompts (each with its sparsity).
        options: seed, batch_size, guidance and init_scheme are read.
        context: given members for the frozen weights, or None (see frozen_inits).
        on_step: called with 1 after every model pass.
    """
    num = len(per_net)
    if any("sparsity" not in p for p in per_net):
        raise ConfigError(
            "conditions.sparsity", "required for a mask model (the fraction of weights removed)"
        )
    ch = meta.get("channels") or model.config.channels
    arch = MemberTensors(meta["architecture"], meta["arch_config"], {}).arch
    inits, seeds = frozen_inits(arch, context, num, options.seed, options.init_scheme)
    prior = meta.get("mask_prior")
    if prior is not None:  # the logits are a correction of the least-squares construction's scores
        x, y = prior_data(load_task(meta["task"], **task_options_of(meta)), prior["inputs"])
    members, scores = [], []
    for lo in range(0, num, options.batch_size):
        hi = min(num, lo + options.batch_size)
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
        c = {n: v[lo:hi] for n, v in cond.items()}
        predict = functools.partial(model, context_tokens, layer_ids=ids, token_valid=valid)  # cond -> logits
        logits = guided(predict, c, options.guidance)  # (B, T, w)
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
