"""Low-rank factorizations of stacked weights: truncated SVD for linear layers, CP / Tucker / TT for convs.

How one requested `rank` r becomes each layer's ranks (and when it is an error); a conv kernel is
(O, C, k) in 1-D or (O, C, kh, kw) in 2-D, written (O, C, *k) below:
    linear (out, in)        W = U V with U (out, r), V (r, in). Limit min(out, in). A hidden layer with
                            r above its limit is an error; the output layer (its width is the task's class
                            count, not a design choice) is clamped at its limit.
    cp     (O, C, *k)       r rank-one terms: one factor (n, r) per mode, e.g. (O, r), (C, r), (kh, r), (kw, r).
                            Limit prod(shape) / max(shape), the generic upper bound on a tensor's CP rank.
    tucker (O, C, *k)       Tucker-2 (Kim et al. 2016): core ranks (min(r, O), min(r, C), *k), the
                            small spatial modes kept whole. Limit max(O, C): there it is exact.
    tt     (O, C, *k)       tensor-train bond ranks r_k = min(r, r_{k-1} n_k, prod(n_k+1 ...)), cores
                            (r_{k-1}, n_k, r_k). Limit the largest exact bond, max_k min(prod n_<=k, prod n_>k).
A conv layer never clamps: r above its limit is an error (the request has no meaning there).

Factors of one weight are named `<weight name>.<factor>` (U, V / cp0.. / core, tk0.. / tt0..; one per
mode, so cp0..cp2 for a 1-D kernel and cp0..cp3 for a 2-D one); every reconstruction is a batched
einsum, so factorized training can backpropagate through it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from tensorly.decomposition import parafac, tensor_train, tucker

from mole.errors import ConfigError
from mole.nets import Architecture, Params

CONV_METHODS = ("cp", "tucker", "tt", "none")


@dataclass(frozen=True)
class LayerPlan:
    """How one weight tensor is factorized: kind ("linear", "cp", "tucker", "tt") and its ranks."""

    name: str
    kind: str
    ranks: tuple[int, ...]
    ndim: int = 4  # modes of the per-member weight: 3 for a 1-D conv kernel (O, C, k); linear ignores it


def rank_limit(kind: str, shape: tuple[int, ...]) -> int:
    """The largest meaningful `rank` for a weight of this (per-member) shape and kind."""
    if kind == "linear":
        return min(shape)
    if kind == "cp":
        return math.prod(shape) // max(shape)
    if kind == "tucker":
        return max(shape[0], shape[1])
    return max(min(math.prod(shape[:k]), math.prod(shape[k:])) for k in range(1, len(shape)))


def layer_ranks(kind: str, shape: tuple[int, ...], r: int) -> tuple[int, ...]:
    """The per-mode ranks of rank-r factorization of a weight (see the module docstring)."""
    if kind == "linear":
        return (min(r, *shape),)
    if kind == "cp":
        return (r,)
    if kind == "tucker":
        return (min(r, shape[0]), min(r, shape[1]), *shape[2:])
    bonds = [1]
    for k in range(1, len(shape)):
        bonds.append(min(r, bonds[-1] * shape[k - 1], math.prod(shape[k:])))
    return (*bonds, 1)


def plan_layers(arch: Architecture, rank: int, conv: str, field: str) -> list[LayerPlan]:
    """Which weights are factorized, how, at which ranks; ConfigError when `rank` exceeds a limit.

    Args:
        arch: the architecture.
        rank: the requested rank r.
        conv: "cp", "tucker", "tt" or "none" (conv kernels kept whole).
        field: config field named in errors, e.g. "variants.lowrank.rank".
    """
    shapes = arch.param_shapes()
    names = arch.weight_names()
    plans = []
    for name in names:
        shape = shapes[name]
        kind = "linear" if len(shape) == 2 else conv
        if kind == "none":
            continue
        limit = rank_limit(kind, shape)
        clamp = kind == "linear" and name == names[-1]  # the output layer
        if rank > limit and not clamp:
            dims = "x".join(map(str, shape)) + ("" if kind == "linear" else f", {kind}")
            raise ConfigError(field, f"{rank} exceeds the limit {limit} of {name} ({dims})")
        plans.append(LayerPlan(name, kind, layer_ranks(kind, shape, rank), len(shape)))
    return plans


# ---------------------------------------------------------------------------- decompose
def svd_factors(w: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Truncated SVD of K matrices, split evenly: U sqrt(S), sqrt(S) V^T (Eckart-Young optimal).

    Args:
        w: (K, out, in).
        r: rank kept.

    Returns:
        U (K, out, r) and V (K, r, in) in float32, and all singular values (K, min(out, in)) in float64.
    """
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)  # float64: factors exact to float32
    root = s[:, :r].sqrt()  # (K, r)
    return (u[:, :, :r] * root.unsqueeze(1)).float(), (root.unsqueeze(2) * vh[:, :r]).float(), s


def _decompose_one(w: np.ndarray, plan: LayerPlan) -> list[np.ndarray]:
    """tensorly on one member's kernel (float64 numpy backend); returns the factors in name order."""
    if plan.kind == "cp":
        # With r above a mode's size the SVD init pads with random columns (seeded) and warns.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Trying to compute SVD", category=UserWarning)
            weights, factors = parafac(w, rank=plan.ranks[0], init="svd", random_state=0, n_iter_max=200)
        return [factors[0] * weights, *factors[1:]]  # fold the (unit) weights into the first factor
    if plan.kind == "tucker":
        # A kernel mode is kept whole; when the other ranks are below its size (a 1-D kernel of 5 at
        # rank 2 unfolds to 5 x 4) the mode's SVD has fewer vectors than asked, and tensorly warns and
        # completes them to an orthonormal basis (seeded), which is exact for a whole mode.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Trying to compute SVD", category=UserWarning)
            core, factors = tucker(w, rank=list(plan.ranks), init="svd", random_state=0)
        return [core, *factors]
    return list(tensor_train(w, rank=list(plan.ranks)))


def factor_names(plan: LayerPlan) -> list[str]:
    if plan.kind == "linear":
        return ["U", "V"]
    if plan.kind == "tucker":
        return ["core", *[f"tk{i}" for i in range(plan.ndim)]]
    return [f"{'cp' if plan.kind == 'cp' else 'tt'}{i}" for i in range(plan.ndim)]


def _einsum_spec(plan: LayerPlan) -> str:
    """The batched einsum that rebuilds a conv kernel from its factors, for 3 or 4 modes."""
    modes = "abcd"[: plan.ndim]  # O, C, then the kernel's spatial modes
    if plan.kind == "cp":
        return ",".join(f"k{m}r" for m in modes) + f"->k{modes}"
    if plan.kind == "tucker":
        ranks = "pqrs"[: plan.ndim]
        return f"k{ranks}," + ",".join(f"k{m}{r}" for m, r in zip(modes, ranks)) + f"->k{modes}"
    bonds = ["x", *"pqr"[: plan.ndim - 1], "y"]  # x = y = 1: the TT boundary bonds
    return ",".join(f"k{bonds[i]}{m}{bonds[i + 1]}" for i, m in enumerate(modes)) + f"->k{modes}"


def decompose(w: torch.Tensor, plan: LayerPlan) -> dict[str, torch.Tensor]:
    """The factors of K stacked weights, each (K, ...) float32, keyed `<weight>.<factor>`."""
    if plan.kind == "linear":
        u, v, _ = svd_factors(w, plan.ranks[0])
        parts = [u, v]
    else:
        # tensorly's ALS / HOOI / TT-SVD take one tensor at a time and iterate to a per-tensor
        # tolerance, so the K members are decomposed one by one (no batched equivalent).
        per = [_decompose_one(m.detach().double().cpu().numpy(), plan) for m in w]
        parts = [torch.from_numpy(np.stack(f)).float().to(w.device) for f in zip(*per)]
    return {f"{plan.name}.{n}": p for n, p in zip(factor_names(plan), parts)}


def reconstruct(factors: dict[str, torch.Tensor], plan: LayerPlan) -> torch.Tensor:
    """The (K, *shape) weight of factors produced by `decompose` (differentiable, batched)."""
    f = [factors[f"{plan.name}.{n}"] for n in factor_names(plan)]
    if plan.kind == "linear":
        return torch.bmm(f[0], f[1])  # (K, out, r) @ (K, r, in)
    return torch.einsum(_einsum_spec(plan), *f)  # e.g. cp in 2-D: "kar,kbr,kcr,kdr->kabcd"


# ---------------------------------------------------------------------------- whole networks
def to_factors(params: Params, plans: list[LayerPlan], keep_norm: bool = False) -> Params:
    """Replace each planned weight by its factors; biases and unplanned weights are kept (cloned).

    Args:
        params: stacked params (K, ...).
        plans: from `plan_layers`.
        keep_norm: rescale each layer's factors so the reconstruction has the Frobenius norm of the
            original weight. Used to start factorized training: truncating a random init throws away
            most of its energy, and a net of such layers starts with vanishing activations.
    """
    planned = {p.name for p in plans}
    out = {k: v.detach().clone() for k, v in params.items() if k not in planned}
    for plan in plans:
        factors = decompose(params[plan.name], plan)
        gain = torch.ones(len(params[plan.name]), device=params[plan.name].device)  # (K,)
        if keep_norm:
            w, approx = params[plan.name].flatten(1), reconstruct(factors, plan).flatten(1)  # (K, numel)
            gain = w.norm(dim=1) / approx.norm(dim=1).clamp(min=1e-12)
        out.update(balance(factors, gain))
    return out


def balance(factors: dict[str, torch.Tensor], gain: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rescale one layer's factors to equal Frobenius norms, times gain^(1/F) each.

    The reconstruction is linear in every factor, so it changes only by `gain` (K,). Equal norms keep
    ALS's arbitrary scale split (CP) from giving one factor most of the magnitude, which would make
    its gradient steps, and the stored values, lopsided.
    """
    norms = torch.stack([f.flatten(1).norm(dim=1) for f in factors.values()]).clamp(min=1e-30)  # (F, K)
    target = norms.log().mean(0).exp() * gain ** (1.0 / len(factors))  # (K,)
    return {
        n: f * (target / norms[i]).view(-1, *[1] * (f.dim() - 1)) for i, (n, f) in enumerate(factors.items())
    }


def from_factors(arch: Architecture, fparams: Params, plans: list[LayerPlan]) -> Params:
    """Effective params (architecture order) from a factor dict made by `to_factors`."""
    rebuilt = {p.name: reconstruct(fparams, p) for p in plans}
    return {n: rebuilt[n] if n in rebuilt else fparams[n] for n in arch.param_shapes()}


def flat_factors(fparams: Params, plans: list[LayerPlan]) -> tuple[torch.Tensor, list]:
    """(K, F) concatenation of every factor, and [[name, [dims]], ...] in that order."""
    names = [f"{p.name}.{n}" for p in plans for n in factor_names(p)]
    flat = torch.cat([fparams[n].detach().flatten(1) for n in names], 1).float()
    return flat, [[n, list(fparams[n].shape[1:])] for n in names]
