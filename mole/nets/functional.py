"""Stacked building blocks: K independent layers computed by one batched kernel."""

from __future__ import annotations

import torch
import torch.nn.functional as F

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


def stacked_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int, shared: bool = False
) -> torch.Tensor:
    """K 1-D or 2-D conv layers at once, as one grouped convolution: member i is group i.

    Members sit in the channel dimension, so the maps of K members are the maps of one wide network
    and pooling needs no reshape. Equal to nn.Conv1d / nn.Conv2d up to float rounding (the kernel's
    summation order may differ from the plain module's).

    Why grouped, not im2col + batched matmul: at one thread per worker process (the default layout)
    the unfold copies and unfold's backward cost more than the convolution itself (ledger Z19).

    A member's result, forward and backward, does not depend on how many members share the call:
    worker processes train slices of the members and must give bitwise the same members. oneDNN keeps
    that for two groups or more, but runs another kernel for one: a lone member runs as two groups,
    itself and a copy whose output is dropped (adding the copy's zero gradient is exact).

    Args:
        x: (B, K*C, *S) one batch per member, member-major channels; or, with `shared`, (B, C, *S)
            seen by every member. S is (L,) for signals, (H, W) for images.
        weight: (K, O, C, k) or (K, O, C, k, k), as the plain module's kernels.
        bias: (K, O), or None for none (add it later with `stacked_bias`, e.g. after pooling).
        padding: zero padding on each side of every spatial dim.
        shared: x is one batch for all members (a plain convolution with K*O output channels).

    Returns:
        (B, K*O, *S'), member-major channels (S' = S with same padding).
    """
    k, o = weight.shape[:2]
    d = weight.dim() - 3
    w = weight.reshape(k * o, *weight.shape[2:])  # (K*O, C, *k)
    if shared:  # oneDNN writes a one-channel input's maps channels-first: pooling them costs ~8x
        out = channels_last(CONV[d](x, w, padding=padding))
    elif k == 1:  # two groups, the member and a copy: the same kernels as any larger slice of members
        x2 = channels_last(x.repeat(1, 2, *[1] * d))
        out = CONV[d](x2, w.repeat(2, *[1] * (d + 1)), padding=padding, groups=2)[:, :o]
    else:
        out = CONV[d](x, w, padding=padding, groups=k)
    return out if bias is None else stacked_bias(out, bias)


def stacked_bias(out: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """out + bias, in place, for maps (B, K*O, *S) with member-major channels and bias (K, O)."""
    return _AddBias.apply(out, bias)


class _AddBias(torch.autograd.Function):
    """out + bias per member and channel, in place, with a bias gradient that is each member's own sum.

    Why not autograd's sum: over channels-last maps it vectorises across the K*O channels, so a
    channel's summation order depends on K (worker processes must give bitwise the same members).
    Here each member's sum is its own matmul with a ones vector, as the fully connected layers are.
    oneDNN's fused bias has the same flaw, so the convolution runs without one.
    """

    @staticmethod
    def forward(ctx, out, bias):  # out (B, K*O, *S), bias (K, O)
        ctx.mark_dirty(out)
        ctx.shape = bias.shape
        return out.add_(bias.reshape(1, -1, *[1] * (out.dim() - 2)))

    @staticmethod
    def backward(ctx, grad):
        k, o = ctx.shape
        g = grad.movedim(1, -1).reshape(-1, k, o).transpose(0, 1)  # (K, B*S, O); a view if channels-last
        ones = g.new_ones(k, 1, g.shape[1])
        return grad, torch.bmm(ones, g).view(k, o)


def members_to_channels(x: torch.Tensor) -> torch.Tensor:
    """(K, B, C, *S) one batch per member -> (B, K*C, *S), the layout of stacked_conv."""
    return channels_last(x.transpose(0, 1).flatten(1, 2))


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """Images (B, C, H, W) stored channels-last, signals (B, C, L) unchanged (values are the same).

    Why: CPU max-pooling of maps this small is ~15x faster channels-last, and oneDNN's convolution is
    ~2x faster on it and keeps the format for the next layer.
    """
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def channels_to_members(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, K*C, *S) -> (K, B, C*prod(S)), each member's maps flattened as a plain module's flatten(1)."""
    return x.reshape(x.shape[0], k, -1).transpose(0, 1)
