"""Projection of generated members onto exact constraints: sparsity, a bit grid, a rank.

A denoiser's output is only approximately sparse, quantized or low-rank; these functions make the
constraint hold exactly, reusing the zoo's own helpers so a generated member is stored like a
trained one (mole.zoo.store's variant column contract):
    sparsity  remove exactly round(s * n) weights (biases never), the lowest |w| or the lowest score
              (mask logits of a mask model), over each tensor ("layerwise") or the whole member
              ("global"); mole.zoo.pruning. `sparsity` is the fraction REMOVED, as everywhere.
    bits      per-output-channel symmetric codes + scales (or ternary); mole.zoo.quant, its default
              "mse" scale (the clip of least rounding error). Weights are exactly code * scale.
              Combined with sparsity, pruning comes first: removed weights get code 0, so the
              member stays exactly as sparse.
              Generated codes and scales (a model trained on quantized members) are snapped onto the
              grid instead: the codes are the model's, not recomputed from the weights.
    rank      truncated SVD of every linear weight (U V, Eckart-Young); conv kernels stay whole;
              mole.zoo.lowrank. Cannot be combined with sparsity or bits (a product of factors is
              neither sparse nor on a grid).
Neutral levels are no-ops: sparsity 0, bits 32 (float), rank 0 (full), as in mole.conditions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mole.conditions import FLOAT32_BITS, FULL_RANK
from mole.errors import ConfigError
from mole.nets import Architecture, Params
from mole.tokenizer import MemberTensors
from mole.zoo import pruning
from mole.zoo.lowrank import flat_factors, from_factors, plan_layers, to_factors
from mole.zoo.quant import LEVELS, TERNARY, codes_onto_grid, level_bits, quantize_params


@dataclass
class Projected:
    """K projected members in the zoo's column layout (each tensor (K, ...) or None)."""

    params: Params  # effective params (K, ...)
    mask: torch.Tensor | None = None  # (K, P) bool over every parameter, biases True
    init_params: torch.Tensor | None = None  # (K, P) float32 frozen weights (mask models)
    codes: torch.Tensor | None = None  # (K, sum of weight numels) int8
    scales: torch.Tensor | None = None  # (K, sum of output channels) float32
    factors: torch.Tensor | None = None  # (K, F) float32
    factor_shapes: list | None = None  # [[name, dims], ...]
    sparsity: torch.Tensor | None = None  # (K,) float64 achieved fraction of weights removed
    bits: int | None = None
    rank: int | None = None

    def members(self, arch: Architecture) -> list[MemberTensors]:
        """One validated MemberTensors per member (through the zoo row format, so bit for bit)."""
        flat = arch.flatten(self.params).float()  # (K, P)
        out = []
        for k in range(flat.shape[0]):
            row = {
                "architecture": arch.name,
                "arch_options": json.dumps(arch.config(), sort_keys=True),
                "params": flat[k].numpy(),
                "extra": {"factor_shapes": self.factor_shapes} if self.factors is not None else None,
            }
            for name in ("mask", "init_params", "codes", "scales", "factors"):
                value = getattr(self, name)
                row[name] = None if value is None else value[k].numpy()
            out.append(MemberTensors.from_row(row))
        return out


# ---------------------------------------------------------------------------- level checks
def check_levels(
    arch: Architecture, sparsity=None, bits=None, rank=None, prefix: str = "conditions"
) -> tuple[float, int | str, int]:
    """Normalise requested levels, else a ConfigError naming `<prefix>.<level>`.

    Returns:
        (sparsity in [0, 1), bit level 8 / 4 / 2 / "ternary" / 32, rank >= 0); neutral when None.
    """
    s = 0.0 if sparsity is None else pruning.check_sparsity(sparsity, f"{prefix}.sparsity")
    b = FLOAT32_BITS if bits is None else bits
    numeric = isinstance(b, (int, float)) and not isinstance(b, bool) and b == int(b)
    if b != TERNARY and (not numeric or int(b) not in (*LEVELS, FLOAT32_BITS)):
        valid = ", ".join(str(x) for x in (*LEVELS, FLOAT32_BITS))
        raise ConfigError(f"{prefix}.bits", f"unsupported bit-width {bits!r}; valid: {valid} (float)")
    b = b if b == TERNARY else int(b)
    r = FULL_RANK if rank is None else rank
    if isinstance(r, bool) or not isinstance(r, (int, float)) or r != int(r) or r < 0:
        raise ConfigError(f"{prefix}.rank", f"must be a non-negative integer (0: full rank), got {rank!r}")
    r = int(r)
    if r != FULL_RANK:
        if s > 0 or b != FLOAT32_BITS:
            raise ConfigError(
                f"{prefix}.rank",
                "cannot be combined with sparsity or bits (factors are neither sparse nor on a grid)",
            )
        plan_layers(arch, r, "none", f"{prefix}.rank")  # a rank above a hidden layer's limit
    return s, b, r


# ---------------------------------------------------------------------------- single projections
def sparsify(
    arch: Architecture,
    params: Params,
    sparsity: float,
    scope: str = "global",
    scores: Params | None = None,
) -> tuple[Params, pruning.Masks]:
    """Remove exactly round(sparsity * n) weights of each stacked member.

    Args:
        arch: the members' architecture.
        params: stacked params (K, ...) that are masked (the frozen init of a mask model).
        sparsity: fraction of weights removed, in [0, 1).
        scope: "global" or "layerwise".
        scores: {weight name: (K, *shape)} ranking (higher kept first); None: |params|.
    """
    pruning.check_sparsity(sparsity, "sparsity")
    weights = pruning.prunable(arch, params)
    scores = {n: w.detach().abs() for n, w in weights.items()} if scores is None else scores
    masks = pruning.masks_from_scores({n: scores[n].float() for n in weights}, sparsity, scope)
    return pruning.apply_masks(params, masks), masks


def factor_shapes(arch: Architecture, rank: int) -> list:
    """[[name, dims], ...] of the factors a rank-`rank` member of `arch` stores (mole.zoo.lowrank's
    order: U (out, r) and V (r, in) of every linear weight; the output layer clamps at its width)."""
    shapes = arch.param_shapes()
    return [
        [f"{p.name}.{n}", dims]
        for p in plan_layers(arch, rank, "none", "rank")
        for n, dims in zip(("U", "V"), ([shapes[p.name][0], p.ranks[0]], [p.ranks[0], shapes[p.name][1]]))
    ]


def from_generated_factors(
    arch: Architecture, params: Params, factors: Params, rank: int
) -> tuple[Params, torch.Tensor, list]:
    """A rank-`rank` member built from generated factors: every linear weight U V, biases as generated.

    Args:
        arch: the members' architecture.
        params: stacked params (K, ...) as generated (their biases are kept).
        factors: {factor name: (K, *dims)} as `factor_shapes` names them.
        rank: the prompted rank.

    Returns:
        (effective params (K, ...), flat factors (K, F), factor shapes), as `truncate_rank`.
    """
    plans = plan_layers(arch, rank, "none", "rank")
    want = factor_shapes(arch, rank)
    for name, dims in want:
        got = factors.get(name)
        if got is None or list(got.shape[1:]) != dims:
            have = None if got is None else list(got.shape[1:])
            raise ConfigError("factors", f"{name} should be {dims} at rank {rank}, got {have}")
    planned = {p.name for p in plans}
    fparams = {n: v.detach().float() for n, v in params.items() if n not in planned}
    fparams.update({name: factors[name].detach().float() for name, _ in want})
    rebuilt = {k: v.detach().float() for k, v in from_factors(arch, fparams, plans).items()}
    flat, shapes = flat_factors(fparams, plans)
    return rebuilt, flat, shapes


def truncate_rank(arch: Architecture, params: Params, rank: int) -> tuple[Params, torch.Tensor, list]:
    """Truncated SVD of every linear weight to `rank` (the output layer clamps at its width).

    Returns:
        (effective params (K, ...), flat factors (K, F), factor shapes [[name, dims], ...]).
    """
    plans = plan_layers(arch, rank, "none", "rank")
    fparams = to_factors(params, plans)
    rebuilt = {k: v.detach().float() for k, v in from_factors(arch, fparams, plans).items()}
    flat, shapes = flat_factors(fparams, plans)
    return rebuilt, flat, shapes


# ---------------------------------------------------------------------------- all constraints
def project(
    arch: Architecture,
    params: Params,
    sparsity: float | None = None,
    bits: int | str | None = None,
    rank: int | None = None,
    scope: str = "global",
    scores: Params | None = None,
    init: Params | None = None,
    codes: tuple[Params, Params] | None = None,
    factors: Params | None = None,
) -> Projected:
    """Project K stacked members onto one set of levels.

    Args:
        arch: the members' architecture.
        params: stacked params (K, ...) as generated (ignored when `init` is given).
        sparsity: fraction of weights removed (0 / None: dense).
        bits: 8, 4, 2, "ternary" (32 / None: float).
        rank: truncated-SVD rank of linear layers (0 / None: full).
        scope: "global" or "layerwise" ranking for sparsity.
        scores: ranking of the weights for sparsity (mask logits); None: |w|.
        init: frozen weights (K, ...) to mask instead of `params` (mask models); stored as init_params.
        codes: generated (code values, scales) per weight, (K, *shape) and (K, out), snapped onto the
            bit grid instead of quantizing the weights (None: post-training quantization of `params`).
        factors: generated low-rank factors {name: (K, *dims)} (`factor_shapes` at `rank`): every
            linear weight becomes their product instead of the truncated SVD of `params`.
    """
    s, b, r = check_levels(arch, sparsity, bits, rank, prefix="projection")
    base = {n: t.detach().float() for n, t in (init if init is not None else params).items()}  # (K, ...)
    out = Projected(params=base, bits=None if b == FLOAT32_BITS else level_bits(b))
    if init is not None:
        out.init_params = arch.flatten(base).float()
    if s > 0 or init is not None:
        out.params, masks = sparsify(arch, base, s, scope, scores)
        out.mask = pruning.full_mask(arch, masks)
        out.sparsity = pruning.sparsity_of(masks)
    if b != FLOAT32_BITS:
        keep = None if out.mask is None else {n: masks[n] for n in arch.weight_names()}
        q = (
            quantize_params(arch, out.params, b)
            if codes is None
            else codes_onto_grid(arch, out.params, *codes, b, keep)
        )
        out.params, out.codes, out.scales = q.params, q.codes, q.scales
    if r != FULL_RANK:
        out.params, out.factors, out.factor_shapes = (
            truncate_rank(arch, base, r)
            if factors is None
            else from_generated_factors(arch, base, factors, r)
        )
        out.rank = r
    if out.sparsity is None:
        out.sparsity = torch.zeros(len(next(iter(base.values()))), dtype=torch.float64)
    return out


def stack(members: Sequence[MemberTensors]) -> tuple[Architecture, Params]:
    """The shared architecture and stacked params (K, ...) of members of one architecture."""
    first = members[0]
    for m in members[1:]:
        if (m.architecture, m.arch_config) != (first.architecture, first.arch_config):
            raise ConfigError("members", f"mixed architectures: {first.signature()} and {m.signature()}")
    return first.arch, {n: torch.stack([m.params[n] for m in members]) for n in first.params}


def project_members(
    members: Sequence[MemberTensors],
    sparsity=None,
    bits=None,
    rank=None,
    scope: str = "global",
    scores: Sequence[Params | None] | None = None,
    inits: Sequence[Params] | None = None,
    codes: Sequence[tuple[Params, Params] | None] | None = None,
    factors: Sequence[Params | None] | None = None,
) -> list[MemberTensors]:
    """Project members (one architecture) onto levels given per member or once for all.

    Members sharing levels (and whether they bring scores / codes) are projected together (stacked);
    the output keeps the input order and each member's `extra`.

    Args:
        members: generated members.
        sparsity, bits, rank: a scalar, or a sequence with one value per member.
        scope: "global" or "layerwise".
        scores: per member {weight name: scores} (mask logits, a mask channel) or None for |w|.
        inits: per member frozen weights {name: tensor} to mask (mask models), or None.
        codes: per member generated (codes, scales) {weight name: tensor} or None (see `project`).
        factors: per member generated low-rank factors {name: tensor} or None (see `project`).
    """
    n = len(members)

    def each(v) -> list:
        values = list(v) if isinstance(v, (list, tuple)) else [v] * n
        if len(values) != n:
            raise ConfigError("projection", f"{len(values)} levels for {n} members")
        return values

    scores, codes, factors = scores or [None] * n, codes or [None] * n, factors or [None] * n
    keys = [
        (*lv, scores[i] is None, codes[i] is None, factors[i] is None)
        for i, lv in enumerate(zip(each(sparsity), each(bits), each(rank)))
    ]
    arch, _ = stack(members)
    out: list[MemberTensors | None] = [None] * n

    def stacked(items: list) -> Params | None:
        return None if items[0] is None else {k: torch.stack([it[k] for it in items]) for k in items[0]}

    for key in dict.fromkeys(keys):  # distinct groups, first-seen order
        idx = [i for i in range(n) if keys[i] == key]
        _, params = stack([members[i] for i in idx])
        sc = stacked([scores[i] for i in idx])
        init = None if inits is None else stacked([inits[i] for i in idx])
        cs = None if key[4] else tuple(stacked([codes[i][j] for i in idx]) for j in (0, 1))
        fs = stacked([factors[i] for i in idx])
        projected = project(
            arch, params, *key[:3], scope=scope, scores=sc, init=init, codes=cs, factors=fs
        ).members(arch)
        for i, m in zip(idx, projected):
            m.extra = dict(members[i].extra)
            out[i] = m
    return out  # type: ignore[return-value]
