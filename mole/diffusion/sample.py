"""`sample`: draw networks from a model folder, then project them onto the prompted constraints.

Weights models: a batch of noise tokens x_T (B, T, D) runs through DDIMScheduler's `set_timesteps` /
`step` loop built from the model's saved (DDPM) scheduler config; every step calls the denoiser with
the conditions and, for guidance g != 1, again without them (mole.diffusion.prompts.guided); a
self-conditioned denoiser is also handed the (guided) x0 of the step before. The clean
tokens are denormalised with the tokenizer's statistics and detokenized into params-only members of
the model's architecture. Mask models take one pass over frozen inits (mole.masks.sample). Either way
the members are then projected onto the prompted sparsity / bit grid / rank (mole.diffusion.project).

Prompts are validated against the model's trained vocabularies and ranges (mole.diffusion.conditioning);
conditions the model only ever saw with one value (task, architecture, sparsity 0 in a dense zoo)
are filled in at that value (see prompts.fill_constants), the others left out get their null embedding.
Each network's prompt picks the cell (architecture, shape and task) it is drawn as, among those
the model trained on (mole.diffusion.cells); networks of one cell are drawn together.

Everything random is drawn from one torch.Generator per cell, seeded with `options.seed` (a
hash of it and the cell for a model of several), so a seed gives the same networks bit for bit
(on one machine); the noise of network i does not depend on the batch size.

Structure channels: a weights model trained on sparse, quantized or low-rank rows (its tokenizer gives
token space to masks, codes or factors) generates them beside the weights. By default a net prompted
with a sparsity, bits or a rank is made exact from its generated weights (magnitude top-k,
post-training quantization, truncated SVD): the model was told the level and generated weights for it.
`options.channels=True` reads the level from the channels instead: the top-k of the generated mask
channel, the generated codes snapped onto the grid with the generated scales, every linear weight the
product U V of its generated factors (drawn with its rank's V factor tokens, as its training rows held
them). Each net records which in extra["structure"] ("weights" or "channel").
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

from mole.conditions import FLOAT32_BITS
from mole.diffusion.cells import cell_seed, cells_of, pick
from mole.diffusion.model_dir import Model, load_model
from mole.diffusion.options import SampleOptions, pairs_model
from mole.diffusion.project import check_levels, factor_shapes, project_members
from mole.diffusion.prompts import (
    PROJECTED,
    context_members,
    encode_prompts,
    expand_prompts,
    fill_constants,
    guided,
    levels_of,
)
from mole.errors import ConfigError
from mole.masks import sample as masks
from mole.tokenizer import MemberTensors
from mole.tokenizer.canonical import apply_permutation, invert

SCOPE = "global"  # a weights model's nets are pruned by magnitude over the whole member


@torch.no_grad()
def sample(
    model_dir: str | Path,
    conditions: Mapping[str, Any],
    num: int,
    options: SampleOptions | None = None,
    context: MemberTensors | Sequence[MemberTensors] | None = None,
    project: Mapping[str, Any] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    model: Model | tuple | None = None,
) -> list[MemberTensors]:
    """Draw `num` networks for `conditions` and project them onto the prompted constraints.

    Args:
        model_dir: a model folder (mole.diffusion.model_dir).
        conditions: name -> value, or a list of `num` values (one prompt per network); categorical
            ones by name (variant="dense"); sparsity / bits / rank are also projected onto exactly.
        num: networks to draw.
        options: steps, guidance, seed, batch size, temperature, scope, init scheme (SampleOptions;
            None: its defaults).
        context: mask models: members whose init_params (else params) are the frozen weights, one
            for all networks or one per network; None draws them from the seed. Pairs models: the
            starting checkpoint(s).
        project: sparsity / bits / rank (a value, or a list of `num`) to project onto without
            conditioning on them, for a model that never saw them: e.g. a dense-only model's nets
            pruned to a sparsity by magnitude. Recorded in extra["project"].
        on_step: called as on_step(done, total) after every model call of every batch (progress).
        model: an already loaded (net, scheduler, tokenizer, meta) to skip loading.

    Returns:
        The networks, each with extra["prompt"] (its conditions) and, for drawn inits, extra["init_seed"].
    """
    net, scheduler, tok, meta = model or load_model(model_dir)
    options = (options or SampleOptions()).resolved(pairs_model(meta))
    per_net = expand_prompts(conditions, num)
    per_proj = expand_prompts(project or {}, num, "project")
    for name in project or {}:
        if name not in PROJECTED:
            raise ConfigError(f"project.{name}", f"cannot be projected onto; valid: {', '.join(PROJECTED)}")
        if name in conditions:
            raise ConfigError(f"project.{name}", "also given as a condition: give it once")
    one_pass = meta["target"] == "mask"
    cells = cells_of(meta)
    which = [pick(meta, p) for p in per_net]  # each net's cell; fills its architecture and task
    groups = {s: [i for i in range(num) if which[i] == s] for s in dict.fromkeys(which)}  # prompted order
    if one_pass and len(cells) > 1:
        raise ConfigError("model", "a mask model draws one architecture; this one lists several")
    archs = [MemberTensors(s["architecture"], s["arch_config"], {}).arch for s in cells]
    fill_constants(meta, per_net)
    cond = encode_prompts(meta, per_net, options.extrapolate)
    wanted = [{**p, **q} for p, q in zip(per_net, per_proj)]  # what each net is projected onto
    for q, w, s in zip(per_proj, wanted, which):  # every level is checked before any model call
        check_levels(archs[s], *levels_of(q), prefix="project")  # a bad --project value names project.*
        check_levels(archs[s], *levels_of(w))
    batches = sum(-(-len(g) // options.batch_size) for g in groups.values())
    total = batches * (1 if one_pass else options.steps)  # model calls, all batches
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if on_step:
            on_step(done[0], total)

    if one_pass:
        members, scores, inits = masks.sample_masks(net, tok, meta, cond, per_net, options, context, tick)
        scope = options.scope or masks.SCOPE
        codes = factors = None
    else:
        fields = [structure_fields(tok, meta, p) if options.channels else [] for p in per_net]
        hows = [structure_of(p, f) for p, f in zip(per_net, fields)]  # each level: channel or weights
        for how in hows:
            missing = [k for k, v in how.items() if v != "channel" and k != "rank"]
            if options.channels and missing:
                raise ConfigError(
                    "channels",
                    f"the model generates no channel for {missing[0]} (it never trained on "
                    "such rows with its tokenizer's mask / codes fields): leave channels false",
                )
        starts = context_members(context, num)
        members, channels = [None] * num, [None] * num
        for s, idx in groups.items():
            seed = cell_seed(options.seed, s, len(cells))
            drawn, read = sample_weights(
                net, scheduler, tok, meta, {n: v[idx] for n, v in cond.items()}, len(idx),
                replace(options, seed=seed), None if starts is None else [starts[i] for i in idx], tick,
                [fields[i] for i in idx], cells[s], [levels_of(per_net[i])[2] for i in idx],
            )  # fmt: skip
            for i, m, ch in zip(idx, drawn, read):
                members[i], channels[i] = m, ch
        weights = [archs[s].weight_names() for s in which]
        scores = [
            None if ch["mask"] is None else {n: ch["mask"][n] for n in w} for ch, w in zip(channels, weights)
        ]
        codes = [None if ch["codes"] is None else (ch["codes"], ch["scales"]) for ch in channels]
        factors = [ch.get("factors") for ch in channels]
        inits = None
        scope = options.scope or SCOPE
        for m, how in zip(members, hows):
            if how:
                m.extra["structure"] = how
    for m, p, q in zip(members, per_net, per_proj):
        m.extra = {**m.extra, "prompt": p, **({"project": q} if q else {})}
    levels = [levels_of(w) for w in wanted]
    out = [None] * num
    for idx in groups.values():  # projection stacks members of one architecture
        projected = project_members(
            [members[i] for i in idx], *(list(x) for x in zip(*(levels[i] for i in idx))), scope=scope,
            scores=None if scores is None else [scores[i] for i in idx],
            inits=None if inits is None else [inits[i] for i in idx],
            codes=None if codes is None else [codes[i] for i in idx],
            factors=None if factors is None else [factors[i] for i in idx],
        )  # fmt: skip
        for i, m in zip(idx, projected):
            out[i] = m
    return out


def structure_of(prompt: Mapping, fields: list[str]) -> dict[str, str]:
    """How each prompted (non-neutral) level of a net was met: "channel" (its generated mask, codes or
    factors) or "weights" (its generated weights made exact)."""
    sparsity, bits, rank = levels_of(prompt)
    asked = {"sparsity": bool(sparsity), "bits": bits not in (None, FLOAT32_BITS), "rank": bool(rank)}
    channel = {"sparsity": "mask", "bits": "codes", "rank": "factors"}
    return {k: "channel" if channel[k] in fields else "weights" for k, on in asked.items() if on}


def structure_fields(tok, meta: Mapping, prompt: Mapping) -> list[str]:
    """The structure channels a weights model generated for `prompt`: "mask" for a prompted sparsity,
    "codes" for prompted bits and "factors" for a prompted rank, where its tokenizer has the channel
    and it trained on such members."""
    have, specs = set(tok.fields or []), meta["conditions"]
    sparsity, bits, rank = levels_of(prompt)
    out = []
    if sparsity and "mask" in have and specs.get("sparsity", {}).get("max", 0) > 0:
        out.append("mask")
    if bits not in (None, FLOAT32_BITS) and "codes" in have and specs.get("bits", {}).get("min", 32) < 32:
        out.append("codes")
    if rank and "factors" in have and specs.get("rank", {}).get("max", 0) > 0:
        out.append("factors")
    return out


def sample_weights(
    denoiser,
    scheduler,
    tok,
    meta: Mapping,
    cond: dict[str, torch.Tensor],
    num: int,
    options: SampleOptions,
    context,
    on_step: Callable[[int], None],
    fields: Sequence[list[str]] | None = None,
    cell: Mapping | None = None,
    ranks: Sequence[int | None] | None = None,
) -> tuple[list[MemberTensors], list[dict]]:
    """DDIM over token grids of one architecture -> unprojected params-only members, and the
    generated channels of `fields`.

    Args:
        denoiser: the Denoiser; scheduler: its saved DDPM scheduler; tok: its tokenizer; meta: mole.json.
        cond: name -> (num,) encoded conditions.
        num: networks.
        options: steps, guidance, seed, batch_size and temperature are read.
        context: starting checkpoints of a pairs model (one, or one per network), or None.
        on_step: called with 1 after every denoiser step.
        fields: per network, the structure channels to read ("mask", "codes", "factors"; see
            structure_fields): masks, codes and U factor rows are columns of the same tokens, so
            every net is drawn alike and only read with its own layout. A net that reads "factors"
            is also drawn with its rank's V factor tokens after its neuron tokens, as its training
            rows held them (nets of fewer tokens are padded and masked, as in training). None: none.
        cell: the architecture and arch_config drawn (mole.diffusion.cells); None: the
            model's own (meta["architecture"], meta["arch_config"]).
        ranks: per network, the prompted rank (read with "factors"); None: none.

    Returns:
        (members, channels): channels[i] is layout.decode_fields of net i's tokens read with its
        fields (field -> {name: float32 tensor}, None where not read).
    """
    options = options.resolved(pairs_model(meta))
    fields = fields or [[] for _ in range(num)]
    ranks = ranks or [None] * num
    cell = cell or meta
    layout = tok.plan(cell["architecture"], cell["arch_config"], [], None)
    layouts = {((), None): layout}

    def layout_of(read: tuple[str, ...], rank: int | None) -> dict:
        """The layout net tokens are read with: its fields, and its rank's factors when it reads them."""
        key = (read, rank if "factors" in read else None)
        if key not in layouts:
            arch = MemberTensors(cell["architecture"], cell["arch_config"], {}).arch
            shapes = factor_shapes(arch, rank) if "factors" in read else None
            layouts[key] = tok.plan(cell["architecture"], cell["arch_config"], list(read), shapes)
        return layouts[key]

    drawn = [layout_of(("factors",), r) if "factors" in f else layout for f, r in zip(fields, ranks)]
    lengths = torch.tensor([lay["shape"][0] for lay in drawn])  # (N,) tokens of each net
    t_len, d = int(lengths.max()), layout["shape"][1]
    if denoiser.config.token_dim != d:
        raise ConfigError(
            "model", f"the denoiser takes {denoiser.config.token_dim} channels, its tokenizer makes {d}"
        )
    ddim = DDIMScheduler.from_config(scheduler.config, timestep_spacing=options.timestep_spacing)
    ddim.set_timesteps(options.steps)
    gen = torch.Generator().manual_seed(int(options.seed))
    noise = torch.randn(num, t_len, d, generator=gen) * (
        ddim.init_noise_sigma * options.temperature
    )  # (N, T, D), all drawn up front
    ids = torch.stack(
        [F.pad(tok.layer_ids(lay), (0, t_len - int(n)), value=-1) for lay, n in zip(drawn, lengths)]
    )  # (N, T), -1 on padding as in training batches
    starts = context_members(context, num)
    out, channels = [], []
    for lo in range(0, num, options.batch_size):
        hi = min(num, lo + options.batch_size)
        b = hi - lo
        x = noise[lo:hi].clone()  # (B, T, D)
        c = {n: v[lo:hi] for n, v in cond.items()}
        encoded = [] if starts is None else [start_tokens(tok, meta, m) for m in starts[lo:hi]]
        ctx = torch.stack([F.pad(t, (0, 0, 0, t_len - len(t))) for t, _ in encoded]) if encoded else None
        valid = torch.arange(t_len) < lengths[lo:hi, None]  # (B, T)
        estimate = torch.zeros_like(x) if getattr(denoiser.config, "self_condition", False) else None
        for t in ddim.timesteps:
            ts = torch.full((b,), int(t), dtype=torch.long)
            sc = {} if estimate is None else {"estimate": estimate}  # only self-conditioned models take one
            predict = functools.partial(  # cond -> the denoiser's prediction at x_t
                denoiser, x, ts, layer_ids=ids[lo:hi], token_valid=valid, context=ctx, **sc
            )
            pred = guided(predict, c, guidance_at(options, int(t)), meta.get("cond_drop_keep", ()))
            stepped = ddim.step(pred, t, x, generator=gen)
            x = stepped.prev_sample  # (B, T, D)
            if estimate is not None:  # self-conditioning: the next step reads this step's (guided) x0
                estimate = stepped.pred_original_sample
            on_step(1)
        for i in range(b):
            mine = x[i, : layout["shape"][0]]  # its neuron tokens (factor tokens, if any, follow them)
            tokens = tok.denormalize(mine, layout) if meta.get("normalized", True) else mine
            member = tok.detokenize(tokens, layout)
            if encoded and encoded[i][1]:  # drawn in the start's canonical order: back into its own
                member = apply_permutation(member, invert(encoded[i][1]))
            out.append(member)
            read = tuple(fields[lo + i])
            if read:  # denormalised with the statistics of the channels it reads
                lay = layout_of(read, ranks[lo + i])
                mine = x[i, : lay["shape"][0]]
                full = tok.denormalize(mine, lay) if meta.get("normalized", True) else mine
                channels.append(tok.channel_values(full, lay))
            else:
                channels.append(dict.fromkeys(("mask", "codes", "scales", "factors")))
    return out, channels


def guidance_at(options: SampleOptions, t: int) -> float:
    """The guidance scale at training timestep t: options.guidance inside options.guidance_interval
    (everywhere without one), else 1 (the conditional prediction alone)."""
    interval = options.guidance_interval
    return options.guidance if interval is None or interval[0] <= t <= interval[1] else 1.0


def start_tokens(tok, meta: Mapping, member: MemberTensors) -> tuple[torch.Tensor, dict | None]:
    """(T, D) normalised tokens of a starting checkpoint (G.pt pairs models), params only, and the
    permutations that put it in the tokenizer's canonical order (None for a tokenizer without one)."""
    plain = member.replace(mask=None, init_params=None, codes=None, scales=None, factors=None)
    raw, lay = tok.tokenize(plain)
    return (tok.normalize(raw, lay) if meta.get("normalized", True) else raw), lay.get("perm")
