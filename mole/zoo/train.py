"""The stacked trainer: K members, each with its own seed, init, data order and hyperparameters."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from mole.data import TaskData
from mole.nets import Params
from mole.zoo.optim import StackedOptimizer
from mole.zoo.plan import MemberPlan

Forward = Callable[[Params, torch.Tensor], torch.Tensor]  # (params, x) -> logits (K, B, classes)
METRIC_SPLITS = ("train", "val", "test")


def member_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per member: logits (K, B, C), y (K, B) or (B,) -> (K,)."""
    k, b, c = logits.shape
    y = y.expand(k, b) if y.dim() == 1 else y
    # Same value and gradient as F.cross_entropy, but ~3x faster on CPU for (K*B, 10)-shaped logits,
    # where log_softmax's kernel dominated a stacked step (measured by scripts/bench_zoo.py profiling).
    log_probs = logits - logits.logsumexp(-1, keepdim=True)  # (K, B, C)
    return -log_probs.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(1)


@torch.no_grad()
def evaluate_stacked(
    forward: Forward, params: Params, data: TaskData, batch_size: int = 2048
) -> dict[str, torch.Tensor]:
    """Loss and accuracy of every member on every split: {"train_loss": (K,), "train_acc": (K,), ...}."""
    out = {}
    for split in METRIC_SPLITS:
        x, y = data.split(split)
        loss_sum, correct = 0.0, 0.0
        for start in range(0, len(y), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            logits = forward(params, xb)  # (K, B, C), input shared by all members
            loss_sum = loss_sum + member_losses(logits, yb) * len(yb)
            correct = correct + (logits.argmax(-1) == yb).sum(1).to(torch.float64)
        out[f"{split}_loss"] = (loss_sum / max(len(y), 1)).double().cpu()
        out[f"{split}_acc"] = (correct / max(len(y), 1)).double().cpu()
    return out


def data_generators(
    members: Sequence[MemberPlan], device: torch.device | str = "cpu"
) -> list[torch.Generator]:
    """One generator per member for its data order, on a stream apart from its init."""
    return [torch.Generator(device="cpu").manual_seed((m.seed * 7919 + 1) % (2**63 - 1)) for m in members]


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return n_train // batch_size  # drop_last: every step has full batches for every member


def train_stacked(
    forward: Forward,
    params: Params,
    data: TaskData,
    members: Sequence[MemberPlan],
    snapshot_steps: Sequence[int] = (),
    on_snapshot: Callable[[int, Params], None] | None = None,
    after_step: Callable[[Params], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Params:
    """Train K members together with mini-batch SGD/Adam; each member sees its own data order.

    Args:
        forward: computes logits (K, B, classes) from params and per-member inputs (K, B, C, H, W).
        params: stacked trainable tensors (K, ...), updated in place (made leaves requiring grad).
        data: the task; train split is shuffled per member and epoch.
        members: the K members' plans; they must share optimizer, batch size and epochs.
        snapshot_steps: steps at which `on_snapshot(step, params)` is called (0 = before training).
        on_snapshot: receives a step and the live params (copy what you keep).
        after_step: called after each optimizer step (e.g. to re-apply pruning masks).
        on_progress: called with 1 after every step (drives a progress bar).

    Returns:
        The trained params (the same tensors, detached).
    """
    first = members[0]
    if any(
        (m.optimizer, m.batch_size, m.epochs) != (first.optimizer, first.batch_size, first.epochs)
        for m in members
    ):
        raise ValueError("members of one stacked group must share optimizer, batch_size and epochs")
    n = len(data.y_train)
    bs = first.batch_size
    spe = steps_per_epoch(n, bs)
    if spe == 0:
        raise ValueError(f"batch_size {bs} exceeds the {n} training examples")
    device = data.x_train.device
    params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    opt = StackedOptimizer(
        params,
        first.optimizer,
        lr=[m.lr for m in members],
        weight_decay=[m.weight_decay for m in members],
        momentum=[m.momentum for m in members],
    )
    keep = set(snapshot_steps)
    gens = data_generators(members)
    x_flat = data.x_train.flatten(1)  # (N, C*H*W)
    step = 0
    if on_snapshot and 0 in keep:
        on_snapshot(0, params)
    for _ in range(first.epochs):
        perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)  # (K, N)
        for b in range(spe):
            idx = perms[:, b * bs : (b + 1) * bs]  # (K, B)
            # embedding is a faster row gather than x_train[idx] for (K, B) index tensors
            xb = F.embedding(idx, x_flat).view(*idx.shape, *data.input_shape)  # (K, B, C, H, W)
            yb = data.y_train[idx]  # (K, B)
            loss = member_losses(forward(params, xb), yb).sum()  # members' losses are independent
            grads = torch.autograd.grad(loss, list(params.values()))
            opt.step(dict(zip(params, grads)))
            if after_step:
                after_step(params)
            step += 1
            if on_progress:
                on_progress(1)
            if on_snapshot and step in keep:
                on_snapshot(step, params)
    return {k: v.detach() for k, v in params.items()}
