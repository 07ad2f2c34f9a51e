"""Optimizers for stacked members: every member has its own lr, weight decay and momentum.

Why not torch.optim: K members share one (K, ...) tensor, and torch.optim holds one lr per parameter
group, so per-member hyperparameters would need K groups over K separate tensors (and a re-stack each
step). These are the same update rules as torch.optim.SGD / Adam / AdamW with the hyperparameters
broadcast along the member dimension; tests pin them against torch.optim on single members.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mole.errors import ConfigError
from mole.nets import Params


def _per_member(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """(K,) values -> (K, 1, ..., 1) broadcastable against a stacked parameter."""
    t = torch.as_tensor(values, dtype=like.dtype, device=like.device)
    return t.reshape(-1, *([1] * (like.dim() - 1)))


class StackedOptimizer:
    """SGD (momentum, coupled weight decay), Adam (coupled) or AdamW (decoupled), per member.

    Args:
        params: stacked leaf tensors (K, ...) to update in place.
        optimizer: "sgd", "adam" or "adamw".
        lr, weight_decay, momentum: one value per member (momentum is SGD's; Adam uses betas).
        betas, eps: Adam's constants, shared by all members.
    """

    def __init__(
        self,
        params: Params,
        optimizer: str,
        lr: Sequence[float],
        weight_decay: Sequence[float],
        momentum: Sequence[float],
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        if optimizer not in ("sgd", "adam", "adamw"):
            raise ConfigError("optimizer", f"unknown optimizer {optimizer!r}; valid: adam, adamw, sgd")
        self.params, self.kind, self.betas, self.eps = params, optimizer, betas, eps
        self.lr = {n: _per_member(lr, p) for n, p in params.items()}
        self.wd = {n: _per_member(weight_decay, p) for n, p in params.items()}
        self.mom = {n: _per_member(momentum, p) for n, p in params.items()}
        self.state = {n: [torch.zeros_like(p), torch.zeros_like(p)] for n, p in params.items()}
        self.any_wd = any(float(w) != 0.0 for w in weight_decay)  # skip a full pass when no member decays
        self.t = 0

    @property
    def shared_momentum(self) -> float | None:
        """SGD's momentum when every member has the same one, else None.

        Then a gradient can be accumulated straight into the buffers, `buf = momentum * buf + grad`
        (see `Architecture.loss_grads_stacked`'s `beta`), and `step_buffers` finishes the step.
        """
        if self.kind != "sgd":
            return None
        values = {float(v) for v in next(iter(self.mom.values())).flatten()}
        return values.pop() if len(values) == 1 else None

    @property
    def buffers(self) -> Params:
        """SGD's momentum buffers, one per parameter (the tensors `step` updates)."""
        return {n: state[0] for n, state in self.state.items()}

    @torch.no_grad()
    def step_buffers(self) -> None:
        """Finish an SGD step whose gradient is already in the buffers (`buf = momentum * buf + grad`).

        The same update as `step` (torch's SGD), with the coupled weight decay added after the
        momentum rather than before it: equal up to float rounding.
        """
        self.t += 1
        names = list(self.params)
        params, bufs = [self.params[n] for n in names], [self.state[n][0] for n in names]
        if self.any_wd:
            torch._foreach_addcmul_(bufs, [self.wd[n] for n in names], params)
        torch._foreach_addcmul_(params, [self.lr[n] for n in names], bufs, value=-1)

    @torch.no_grad()
    def step(self, grads: Params) -> None:
        self.t += 1
        b1, b2 = self.betas
        if self.kind == "sgd" and all(grads[n] is not None for n in self.params):
            # One multi-tensor kernel per op instead of one per parameter: the stacked step is short
            # enough (a few ms) that per-op dispatch shows.
            names = list(self.params)
            params, bufs = [self.params[n] for n in names], [self.state[n][0] for n in names]
            torch._foreach_mul_(bufs, [self.mom[n] for n in names])
            torch._foreach_add_(bufs, [grads[n] for n in names])
            if self.any_wd:
                torch._foreach_addcmul_(bufs, [self.wd[n] for n in names], params)
            torch._foreach_addcmul_(params, [self.lr[n] for n in names], bufs, value=-1)
            return
        for n, p in self.params.items():
            g = grads[n]
            if g is None:
                continue
            lr, wd = self.lr[n], self.wd[n]
            if self.kind == "sgd":
                buf = self.state[n][0]
                buf.mul_(self.mom[n]).add_(g)  # torch's first step sets buf = d; from zeros this is the same
                if self.any_wd:
                    buf.addcmul_(wd, p)
                p.addcmul_(lr, buf, value=-1)
                continue
            if self.kind == "adamw":
                p.mul_(1 - lr * wd)
            else:
                g = g + wd * p
            m, v = self.state[n]
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / ((1 - b2**self.t) ** 0.5)).add_(self.eps)
            p.sub_((lr / (1 - b1**self.t)) * m / denom)
