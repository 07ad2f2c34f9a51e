"""Stacked building blocks: K independent layers computed by one batched kernel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

CONV = {1: F.conv1d, 2: F.conv2d}  # spatial dims -> convolution
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
    """K 1-D or 2-D conv layers at once as one grouped convolution (the kernel's rank picks which).

    Args:
        x: (B, C, *S) shared by all members (first layer), or (B, K*C, *S) member-major channels; S is
            (L,) for signals, (H, W) for images.
        weight: (K, O, C, k) or (K, O, C, kh, kw).
        bias: (K, O).

    Returns:
        (B, K*O, *S'), member-major channels.
    """
    k, o, c = weight.shape[:3]
    w = weight.reshape(k * o, c, *weight.shape[3:])  # (K*O, C, *kernel)
    groups = 1 if x.shape[1] == c else k  # shared input: every member reads the same C channels
    return CONV[weight.dim() - 3](x, w, bias.reshape(k * o), padding=padding, groups=groups)


def members_to_channels(x: torch.Tensor) -> torch.Tensor:
    """(K, B, C, *S) -> (B, K*C, *S) for grouped convolution."""
    return rearrange(x, "k b c ... -> b (k c) ...")


def channels_to_members(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, K*C, *S) member-major feature maps -> (K, B, C*prod(S)), flattened as a plain module's flatten(1)."""
    if x.dim() == 3:
        return rearrange(x, "b (k c) l -> k b (c l)", k=k)
    return rearrange(x, "b (k c) h w -> k b (c h w)", k=k)
