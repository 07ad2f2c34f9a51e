"""Stacked building blocks: K independent layers computed by one batched kernel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


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


def stacked_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int) -> torch.Tensor:
    """K conv layers at once as one grouped convolution.

    Args:
        x: (B, C, H, W) shared by all members (first layer), or (B, K*C, H, W) member-major channels.
        weight: (K, O, C, kh, kw).
        bias: (K, O).

    Returns:
        (B, K*O, H', W'), member-major channels.
    """
    k, o, c = weight.shape[:3]
    w = weight.reshape(k * o, c, *weight.shape[3:])  # (K*O, C, kh, kw)
    groups = 1 if x.shape[1] == c else k  # shared input: every member reads the same C channels
    return F.conv2d(x, w, bias.reshape(k * o), padding=padding, groups=groups)


def members_to_channels(x: torch.Tensor) -> torch.Tensor:
    """(K, B, C, H, W) -> (B, K*C, H, W) for grouped convolution."""
    return rearrange(x, "k b c h w -> b (k c) h w")
