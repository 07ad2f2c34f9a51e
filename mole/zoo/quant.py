"""Per-channel symmetric weight quantization for stacked members: codes, scales, fake-quant (STE).

Grids (output channel = dim 0 of each per-member weight tensor, one scale per channel):
    symmetric b bits  code in [-(2^(b-1)-1), 2^(b-1)-1], round to nearest, clamp. Symmetric drops the
                      code -2^(b-1), so 2 bits gives codes {-1, 0, 1}. The scale is chosen by `scale`:
                      "mse" (default): of the clips c * max|w|, c in 0.2..1.0 (41 values), the one whose
                          rounded weights are nearest the channel's in squared error; the clipped outliers
                          cost less than the resolution a max|w| scale wastes (2 bits: +20 points of PTQ
                          accuracy on digits, docs/results.md Z27);
                      "absmax": max|w| / (2^(b-1)-1), nothing clipped (Jacob et al. 2018's min/max).
    ternary           code in {-1, 0, 1} (TWN, Li et al. 2016): threshold t = 0.7 * mean|w|,
                      code = sign(w) where |w| > t, scale = mean of |w| above t. Stored as bits=2.
A channel that is all zero gets scale 1 and codes 0, so scales are always positive.

The dequantized weight is `code * scale` computed in float32; `quantize_params` returns exactly those
numbers as the effective params, so dequantizing the stored codes and scales reproduces them bitwise.
Biases are never quantized.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mole.errors import check_choice
from mole.nets import Architecture, Params

TERNARY = "ternary"
LEVELS = (8, 4, 2, TERNARY)  # the bit-widths the zoo supports (codes are stored as int8)
TWN_THRESHOLD = 0.7  # Li et al.'s approximation of the optimal ternary threshold
SCALES = ("mse", "absmax")  # how the symmetric grid's per-channel scale is chosen
CLIPS = torch.linspace(0.2, 1.0, 41)  # the "mse" rule's candidate clips, as fractions of max|w|
MSE_CHUNK = 1 << 22  # rounded weights scored at once by the "mse" search


def level_bits(level: int | str) -> int:
    """The stored bit-width of a level (ternary codes fit in 2 bits)."""
    return 2 if level == TERNARY else int(level)


def qmax(bits: int) -> int:
    """Largest code of the symmetric b-bit grid: 127, 7, 1 for 8, 4, 2 bits."""
    return 2 ** (bits - 1) - 1


def _round(flat: torch.Tensor, scale: torch.Tensor, q: int) -> torch.Tensor:
    """Codes of (K, out, n) weights on the symmetric grid of (K, out) scales."""
    return torch.clamp(torch.round(flat / scale.unsqueeze(-1)), -q, q)


def symmetric_scale(flat: torch.Tensor, q: int, rule: str = "mse") -> torch.Tensor:
    """Per-channel scales (K, out) of (K, out, n) weights for the grid of largest code q (see the
    module docstring). A zero channel gets 1.

    The "mse" search scores the clips in chunks of at most ~4M rounded weights, keeping the best so
    far, so memory stays bounded (all 41 at once would be 41 copies of the weights).
    """
    check_choice(rule, SCALES, "scale")
    amax = flat.abs().amax(-1)  # (K, out)
    zero = amax == 0
    amax = torch.where(zero, torch.ones_like(amax), amax)
    if rule == "absmax":
        return amax / q
    best, best_err = amax / q, torch.full_like(amax, float("inf"))
    clips = CLIPS.to(flat.device, flat.dtype)
    chunk = max(1, min(len(clips), MSE_CHUNK // max(1, flat.numel())))
    for lo in range(0, len(clips), chunk):
        cand = clips[lo : lo + chunk, None, None] * amax / q  # (c, K, out)
        c = cand.unsqueeze(-1)
        # _round's codes, dequantized, minus the weights; in place (5 ms where out of place takes 8
        # at K=16, 32 x 64, 41 clips), as this runs at every QAT step
        t = torch.div(flat, c).round_().clamp_(-q, q).mul_(c).sub_(flat)
        err = t.square_().sum(-1)  # (c, K, out) squared rounding errors
        err, i = err.min(0)  # the first of equal errors: the smaller clip
        better = err < best_err
        best = torch.where(better, cand.gather(0, i[None])[0], best)
        best_err = torch.where(better, err, best_err)
    return torch.where(zero, torch.ones_like(best), best)


def quantize_weight(
    w: torch.Tensor, level: int | str, scale: str = "mse"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes and per-output-channel scales of K stacked weight tensors.

    Args:
        w: (K, out, ...) stacked weights.
        level: 8, 4, 2 or "ternary".
        scale: how the symmetric grid's scale is chosen, "mse" or "absmax" (ternary ignores it).

    Returns:
        codes (K, out, ...) int8 and scales (K, out) float32.
    """
    flat = w.detach().float().flatten(2)  # (K, out, fan_in)
    if level == TERNARY:
        mag = flat.abs()
        thresh = TWN_THRESHOLD * mag.mean(-1, keepdim=True)  # (K, out, 1)
        keep = mag > thresh
        n = keep.sum(-1)  # (K, out)
        scale = torch.where(n > 0, (mag * keep).sum(-1) / n.clamp(min=1), torch.ones_like(n, dtype=mag.dtype))
        codes = torch.sign(flat) * keep
    else:
        q = qmax(int(level))
        scale = symmetric_scale(flat, q, scale)
        codes = _round(flat, scale, q)
    return codes.to(torch.int8).reshape(w.shape), scale.float()


def dequantize_weight(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """code * scale in float32: (K, out, ...) int8 codes, (K, out) scales -> (K, out, ...) weights."""
    shape = scales.shape + (1,) * (codes.dim() - scales.dim())
    return codes.float() * scales.float().reshape(shape)


def fake_quantize(params: Params, weight_names: list[str], level: int | str, scale: str = "mse") -> Params:
    """Quantize-dequantize the weights with a straight-through estimator (identity gradient).

    The scales are treated as constants in the backward pass (they are recomputed every step from the
    latent weights), which is the plain STE of Bengio et al. 2013 / the QAT of Jacob et al. 2018.
    """
    out = dict(params)
    for name in weight_names:
        w = params[name]
        q = dequantize_weight(*quantize_weight(w, level, scale))
        out[name] = w + (q - w).detach()  # forward: q; backward: d/dw = 1
    return out


@dataclass
class QuantizedParams:
    """K quantized members in the zoo's column layout."""

    codes: torch.Tensor  # (K, sum of weight numels) int8, weight_names order
    scales: torch.Tensor  # (K, sum of output channels) float32, same order
    params: Params  # effective params: weights = code * scale, biases as given


def quantize_params(
    arch: Architecture, params: Params, level: int | str, scale: str = "mse"
) -> QuantizedParams:
    """Quantize every weight tensor of K stacked members at once (biases stay float).

    Args:
        arch: the members' architecture (its weight_names() are quantized).
        params: stacked params (K, ...).
        level: 8, 4, 2 or "ternary".
        scale: the symmetric grid's scale rule, "mse" or "absmax".
    """
    out = {k: v.detach().float().clone() for k, v in params.items()}
    codes, scales = [], []
    for name in arch.weight_names():
        c, s = quantize_weight(params[name], level, scale)
        out[name] = dequantize_weight(c, s)
        codes.append(c.flatten(1))  # (K, numel)
        scales.append(s)  # (K, out)
    return QuantizedParams(torch.cat(codes, 1), torch.cat(scales, 1), out)


def dequantize_params(
    arch: Architecture, codes: torch.Tensor, scales: torch.Tensor, params: Params
) -> Params:
    """Rebuild the effective params from stored codes and scales (biases taken from `params`).

    Args:
        arch: the architecture.
        codes: (K, sum of weight numels) or (sum,) int8, as stored.
        scales: (K, sum of output channels) or (sum,) float32, as stored.
        params: params (stacked or not, matching codes) whose biases are kept.
    """
    lead = codes.shape[:-1]
    shapes = arch.param_shapes()
    out, ci, si = dict(params), 0, 0
    for name in arch.weight_names():
        shape = shapes[name]
        n = torch.Size(shape).numel()
        c = codes[..., ci : ci + n].reshape(*lead, *shape)
        s = scales[..., si : si + shape[0]]
        out[name] = dequantize_weight(c, s)
        ci, si = ci + n, si + shape[0]
    if ci != codes.shape[-1] or si != scales.shape[-1]:
        raise ValueError(f"codes/scales lengths {codes.shape[-1]}/{scales.shape[-1]}, expected {ci}/{si}")
    return out


def codes_onto_grid(
    arch: Architecture,
    params: Params,
    codes: Params,
    scales: Params,
    level: int | str,
    keep: Params | None = None,
) -> QuantizedParams:
    """Generated code values and scales made exact: codes rounded and clamped onto the level's grid
    (ternary and 2 bits: {-1, 0, 1}), scales made positive (|s|, 1 where 0, as a zero channel's).

    Args:
        arch: the members' architecture.
        params: stacked params (K, ...) whose biases are kept.
        codes: weight name -> (K, *shape) code values, as generated.
        scales: weight name -> (K, out) scales, as generated.
        level: 8, 4, 2 or "ternary".
        keep: weight name -> (K, *shape) bool: weights removed by a mask get code 0 (None: all kept).
    """
    q = 1 if level == TERNARY else qmax(int(level))
    out = {k: v.detach().float().clone() for k, v in params.items()}
    flat_codes, flat_scales = [], []
    for name in arch.weight_names():
        c = torch.clamp(torch.round(codes[name].float()), -q, q)
        if keep is not None:
            c = c * keep[name]
        s = scales[name].float().abs()
        s = torch.where(s > 0, s, torch.ones_like(s))  # (K, out)
        c = c.to(torch.int8)
        out[name] = dequantize_weight(c, s)
        flat_codes.append(c.flatten(1))  # (K, numel)
        flat_scales.append(s)
    return QuantizedParams(torch.cat(flat_codes, 1), torch.cat(flat_scales, 1), out)


def weight_error(arch: Architecture, ref: Params, params: Params) -> torch.Tensor:
    """Relative Frobenius error of all weight tensors per member: ||W - Q|| / ||W||, (K,)."""
    num = sum(((ref[n] - params[n]).flatten(1) ** 2).sum(1) for n in arch.weight_names())
    den = sum((ref[n].flatten(1) ** 2).sum(1) for n in arch.weight_names())
    return (num / den).sqrt()
