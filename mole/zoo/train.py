"""The stacked trainer: K members, each with its own seed, init, data order and hyperparameters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from multiprocessing.connection import wait

import torch
import torch.nn.functional as F

from mole.data import TaskData
from mole.nets import Params
from mole.zoo.optim import StackedOptimizer
from mole.zoo.plan import MemberPlan

Forward = Callable[[Params, torch.Tensor], torch.Tensor]  # (params, x) -> logits (K, B, classes)
# (params, x, y, out=None, beta=0.0) -> out = beta * out + d(mean cross-entropy)/d params, per member
Grads = Callable[..., Params]
METRIC_SPLITS = ("train", "val", "test")


def member_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per member: logits (K, B, C), y (K, B) or (B,) -> (K,)."""
    k, b, c = logits.shape
    y = y.expand(k, b) if y.dim() == 1 else y
    # Same value and gradient as F.cross_entropy, but ~3x faster on CPU for (K*B, 10)-shaped logits,
    # where log_softmax's kernel dominated a stacked step (measured by scripts/bench_zoo.py profiling).
    # The classes go along dim 1: CPU log_softmax over a last dim of 10 is ~2x slower, backward included.
    log_probs = torch.log_softmax(logits.transpose(1, 2).contiguous(), 1)  # (K, C, B)
    return -log_probs.gather(1, y.unsqueeze(1)).squeeze(1).mean(1)


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
    processes: int = 1,
    grads: Grads | None = None,
) -> Params:
    """Train K members together with mini-batch SGD/Adam; each member sees its own data order.

    With `processes` > 1 (CPU only), forked workers each train a contiguous slice of the members with
    one thread. A member's computation does not depend on which other members share its batch, so
    the result is bitwise the same as one process (tests/zoo/test_train.py pins it).

    Args:
        forward: computes logits (K, B, classes) from params and per-member inputs (K, B, C, H, W).
        params: stacked trainable tensors (K, ...), updated in place (made leaves requiring grad).
        data: the task; train split is shuffled per member and epoch.
        members: the K members' plans; they must share optimizer, batch size and epochs.
        snapshot_steps: steps at which `on_snapshot(step, params)` is called (0 = before training).
        on_snapshot: receives a step and the live params (copy what you keep).
        after_step: called after each optimizer step (e.g. to re-apply pruning masks).
        on_progress: called with the number of steps done since its last call (drives a progress bar).
        processes: worker processes; 1 trains here with torch's threads. With workers, `on_snapshot`
            is called for each kept step after training and `after_step` is not allowed.
        grads: the gradients of `forward`'s mean cross-entropy computed without autograd (an
            architecture's `loss_grads_stacked`, when `forward` is its `forward_stacked`); None
            backpropagates through `forward`. With SGD and one momentum for all members, the
            gradient goes straight into the momentum buffers.

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
    workers = min(processes, len(members)) if data.x_train.device.type == "cpu" else 1
    if workers > 1:
        if after_step is not None:
            raise ValueError("after_step sees all members at once: train with processes=1")
        return train_in_workers(
            forward, params, data, members, workers, snapshot_steps, on_snapshot, on_progress, grads
        )
    return _train(forward, params, data, members, snapshot_steps, on_snapshot, after_step, on_progress, grads)


def _train(
    forward, params, data, members, snapshot_steps, on_snapshot, after_step, on_progress, grads=None
) -> Params:
    """train_stacked's loop, in this process."""
    first = members[0]
    n, bs = len(data.y_train), first.batch_size
    spe = steps_per_epoch(n, bs)
    device = data.x_train.device
    params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    opt = StackedOptimizer(
        params,
        first.optimizer,
        lr=[m.lr for m in members],
        weight_decay=[m.weight_decay for m in members],
        momentum=[m.momentum for m in members],
    )
    momentum = opt.shared_momentum if grads is not None else None
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
            if momentum is not None:  # buf = momentum * buf + grad, then the update
                grads(params, xb, yb, out=opt.buffers, beta=momentum)
                opt.step_buffers()
            elif grads is not None:
                opt.step(grads(params, xb, yb))
            else:
                loss = member_losses(forward(params, xb), yb).sum()  # members' losses are independent
                opt.step(dict(zip(params, torch.autograd.grad(loss, list(params.values())))))
            if after_step:
                after_step(params)
            step += 1
            if on_progress:
                on_progress(1)
            if on_snapshot and step in keep:
                on_snapshot(step, params)
    return {k: v.detach() for k, v in params.items()}


# ---------------------------------------------------------------------------- worker processes
def train_in_workers(
    forward: Forward,
    params: Params,
    data: TaskData,
    members: Sequence[MemberPlan],
    workers: int,
    snapshot_steps: Sequence[int] = (),
    on_snapshot: Callable[[int, Params], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    grads: Grads | None = None,
) -> Params:
    """train_stacked split across `workers` forked processes of one thread, each a slice of the members.

    Workers write their slice of every kept snapshot and of the final params straight into tensors in
    shared memory (nothing is pickled); this process then hands the snapshots to `on_snapshot` in
    step order and copies the final params into `params`.
    """
    first = members[0]
    total = first.epochs * steps_per_epoch(len(data.y_train), first.batch_size)
    keep = sorted({s for s in snapshot_steps if 0 <= s <= total}) if on_snapshot else []
    slots = {
        name: torch.empty(len(keep) + 1, *p.shape, dtype=p.dtype).share_memory_()
        for name, p in params.items()
    }
    bounds = [i * len(members) // workers for i in range(workers + 1)]  # contiguous member slices
    mp = torch.multiprocessing.get_context("fork")  # children inherit forward, data and slots as they are
    steps_done = mp.RawValue("q", 0)  # written by worker 0 only: every worker runs the same steps
    procs = [
        mp.Process(
            target=_worker,
            args=(forward, params, data, members, keep, slots, lo, hi, steps_done if i == 0 else None, grads),
            daemon=True,
        )
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))
    ]
    for p in procs:
        p.start()
    reported = 0
    try:
        while any(p.is_alive() for p in procs):
            wait([p.sentinel for p in procs if p.is_alive()], timeout=0.2)
            failed = [p for p in procs if p.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(
                    f"a training worker failed (exit code {failed[0].exitcode}); see its traceback above"
                )
            if on_progress and steps_done.value > reported:
                on_progress(steps_done.value - reported)
                reported = steps_done.value
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    for j, step in enumerate(keep):
        on_snapshot(step, {name: s[j] for name, s in slots.items()})
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(slots[name][-1])
    return {k: v.detach() for k, v in params.items()}


def _worker(forward, params, data, members, keep, slots, lo, hi, steps_done, grads) -> None:
    """One worker: members[lo:hi] with one thread, writing its rows of `slots`."""
    torch.set_num_threads(1)
    where = {step: j for j, step in enumerate(keep)}

    def write(step: int, p: Params) -> None:
        for name, s in slots.items():
            s[where[step], lo:hi] = p[name].detach()

    def count(n: int) -> None:
        steps_done.value += n

    final = _train(
        forward,
        {name: p[lo:hi].clone() for name, p in params.items()},
        data,
        members[lo:hi],
        keep,
        write if keep else None,
        None,
        count if steps_done is not None else None,
        grads,
    )
    for name, s in slots.items():
        s[-1, lo:hi] = final[name]
