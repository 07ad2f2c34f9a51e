"""Stacked building blocks: K independent layers computed by one batched kernel."""

from __future__ import annotations

import torch
import torch.nn.functional as F

POOL = {1: F.max_pool1d, 2: F.max_pool2d}  # spatial dims -> max-pool


def stacked_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """K linear layers at once.

    Args:
        x: (K, B, in) one batch per member, or (B, in) shared.
        weight: (K, out, in).
        bias: (K, out).

    Returns:
        (K, B, out)
    """
    if x.dim() == 2:
        return torch.matmul(x, weight.transpose(1, 2)) + bias.unsqueeze(1)  # (B,in)@(K,in,out) -> (K,B,out)
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def stacked_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int) -> torch.Tensor:
    """K 1-D or 2-D conv layers at once, as im2col + one batched matmul (the kernel's rank picks 1-D or 2-D).

    Activations are channels-last per member, so each kernel row gathers contiguous runs of channels.
    Not a grouped convolution: on CPU its multi-threaded kernel collapses (~3x slower than this at 2
    threads). Equal to nn.Conv1d / nn.Conv2d up to float rounding (the summation order may differ).

    Args:
        x: (K, B, *S, C) one batch per member, or (B, *S, C) shared by all members; S is (L,) for
            signals, (H, W) for images.
        weight: (K, O, C, k) or (K, O, C, k, k), as the plain module's kernels.
        bias: (K, O).

    Returns:
        (K, B, *S, O), channels-last (same padding keeps S).
    """
    k, o, c = weight.shape[:3]
    d, ks = weight.dim() - 3, weight.shape[-1]
    lead = x.dim() - d - 1  # 2 per member, 1 shared
    cols = F.pad(x, (0, 0) + (padding, padding) * d)  # (*lead, *S+2p, C)
    for i in range(d):
        cols = cols.unfold(lead + i, ks, 1)  # appends a window dim: (*lead, *S, C, *k)
    spatial = cols.shape[lead : lead + d]
    window = [*range(lead + d + 1, lead + 2 * d + 1)]
    cols = cols.permute(*range(lead + d), *window, lead + d)  # (*lead, *S, *k, C)
    w = weight.permute(0, *range(3, 3 + d), 2, 1).reshape(k, -1, o)  # (K, k^d*C, O), rows as cols' last dims
    if lead == 2:
        out = torch.baddbmm(bias.unsqueeze(1), cols.reshape(k, -1, w.shape[1]), w)  # (K, B*S, O)
    else:
        out = torch.matmul(cols.reshape(-1, w.shape[1]), w) + bias.unsqueeze(1)  # (B*S, k^d*C) @ (K, ., O)
    return out.view(k, -1, *spatial, o)


def stacked_pool(x: torch.Tensor) -> torch.Tensor:
    """Max-pool 2 over the spatial dims of channels-last stacked maps: (K, B, *S, C) -> (K, B, *S/2, C)."""
    k, b, c = x.shape[0], x.shape[1], x.shape[-1]
    h = x.reshape(k * b, *x.shape[2:]).movedim(-1, 1)  # (K*B, C, *S), a channels-last view
    h = POOL[x.dim() - 3](h, 2)
    return h.movedim(1, -1).reshape(k, b, *h.shape[2:], c)


def members_last_to_flat(x: torch.Tensor) -> torch.Tensor:
    """(K, B, *S, C) -> (K, B, C*prod(S)), flattened as a plain module's flatten(1) of (C, *S) maps."""
    return x.movedim(-1, 2).flatten(2)
