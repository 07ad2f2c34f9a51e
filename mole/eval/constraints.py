"""constraints: the share of members that exactly meet their prompted sparsity, bit-width and rank."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch

from mole.eval.base import CONDITIONS, EvalSet, Evaluator, Metric, numeric_level, prompt_of
from mole.tokenizer import MemberTensors
from mole.zoo.pruning import n_removed
from mole.zoo.quant import qmax

RANK_RTOL, RANK_ATOL = 1e-4, 1e-5  # params vs U @ V: float32 products summed in another order


def sparsity_met(m: MemberTensors, sparsity: float) -> bool:
    """Exactly round(s * n) weights removed (mole.zoo.pruning's rounding), biases kept, removed ones 0.

    "Removed" means mask False (no mask: nothing removed). The count may hold over all weights of the
    member (global scope) or in every weight tensor on its own (layerwise scope): either is met.
    """
    weights = m.arch.weight_names()
    mask = m.mask or {n: torch.ones_like(t, dtype=torch.bool) for n, t in m.params.items()}
    if not all(mask[n].all() for n in m.params if n not in weights):
        return False  # a pruned bias: biases are never pruned
    if any((m.params[n][~mask[n]] != 0).any() for n in weights):
        return False
    removed = {n: int((~mask[n]).sum()) for n in weights}
    total = sum(m.params[n].numel() for n in weights)
    global_ok = sum(removed.values()) == n_removed(total, sparsity)
    layer_ok = all(removed[n] == n_removed(m.params[n].numel(), sparsity) for n in weights)
    return global_ok or layer_ok


def bits_met(m: MemberTensors, bits: int) -> bool:
    """Codes within the symmetric b-bit grid [-qmax, qmax] and every weight == code * scale bitwise."""
    if m.codes is None or m.scales is None:
        return False
    q = qmax(bits)
    for n, codes in m.codes.items():
        if codes.min() < -q or codes.max() > q:
            return False
        scale = m.scales[n].float().reshape(-1, *[1] * (codes.dim() - 1))  # (out, 1, ...)
        dequantized = codes.float() * scale  # exactly mole.zoo.quant.dequantize_weight
        if not torch.equal(dequantized.view(torch.int32), m.params[n].contiguous().view(torch.int32)):
            return False
    return True


def rank_met(m: MemberTensors, rank: int) -> bool:
    """Every linear weight has rank <= `rank` by construction: factors U (out, r) and V (r, in) with
    r <= rank whose product is the weight (to float tolerance), or a shape with min(out, in) <= rank.
    Conv kernels are not rank-constrained (mole.diffusion.project keeps them whole)."""
    factors = m.factors or {}
    for n in m.arch.weight_names():
        w = m.params[n]
        if w.dim() != 2:
            continue
        u, v = factors.get(f"{n}.U"), factors.get(f"{n}.V")
        if u is None or v is None:
            if min(w.shape) > rank:
                return False
            continue
        if u.shape[1] > rank or v.shape[0] != u.shape[1]:
            return False
        if not torch.allclose(u.double() @ v.double(), w.double(), rtol=RANK_RTOL, atol=RANK_ATOL):
            return False
    return True


CHECKS = {"sparsity": sparsity_met, "bits": bits_met, "rank": rank_met}


@dataclass
class Constraints(Evaluator):
    """frac_sparsity_met, frac_bits_met, frac_rank_met: the share of members that prompted a
    constraint and exactly meet it (see sparsity_met, bits_met, rank_met).

    A member prompts a constraint when its prompt holds a non-neutral level for it (sparsity > 0,
    bits other than 32, rank > 0; "ternary" is checked as bits = 2, the ternary codes' grid).
    A constraint that no member prompted yields nothing.
    """

    name: ClassVar[str] = "constraints"

    def __call__(self, s: EvalSet) -> Iterator[Metric]:
        prompts = [prompt_of(r) for r in s.members]
        for key, met in CHECKS.items():
            levels = [numeric_level(key, p.get(key)) for p in prompts]
            idx = [i for i, v in enumerate(levels) if v is not None and v != CONDITIONS[key]]
            if not idx:
                continue
            tensors = s.tensors()
            ok = [met(tensors[i], levels[i] if key == "sparsity" else int(levels[i])) for i in idx]
            yield f"frac_{key}_met", sum(ok) / len(ok)
