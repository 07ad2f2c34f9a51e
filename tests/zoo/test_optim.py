import pytest
import torch

from mole.errors import ConfigError
from mole.zoo.optim import StackedOptimizer


@pytest.mark.parametrize(
    "kind,make",
    [
        ("sgd", lambda p, lr, wd, mom: torch.optim.SGD([p], lr=lr, weight_decay=wd, momentum=mom)),
        ("adam", lambda p, lr, wd, mom: torch.optim.Adam([p], lr=lr, weight_decay=wd)),
        ("adamw", lambda p, lr, wd, mom: torch.optim.AdamW([p], lr=lr, weight_decay=wd)),
    ],
)
def test_matches_torch_optim_per_member(kind, make):
    torch.manual_seed(0)
    k = 3
    lrs, wds, moms = [0.1, 0.01, 0.05], [0.0, 1e-2, 1e-3], [0.9, 0.0, 0.5]
    start = torch.randn(k, 4, 5)
    stacked = {"w": start.clone()}
    opt = StackedOptimizer(stacked, kind, lrs, wds, moms)
    singles = [start[i].clone().requires_grad_(True) for i in range(k)]
    opts = [make(singles[i], lrs[i], wds[i], moms[i]) for i in range(k)]
    for _ in range(6):
        grads = torch.randn(k, 4, 5)
        opt.step({"w": grads})
        for i in range(k):
            singles[i].grad = grads[i].clone()
            opts[i].step()
    for i in range(k):
        torch.testing.assert_close(stacked["w"][i], singles[i].detach(), rtol=1e-5, atol=1e-6)


def test_gradients_accumulated_into_the_buffers_give_the_same_sgd_steps():
    """shared_momentum + step_buffers (buf = m * buf + g done by the caller) equal step(g)."""
    torch.manual_seed(0)
    k, lrs, wds = 3, [0.1, 0.01, 0.05], [0.0, 1e-2, 1e-3]
    start = torch.randn(k, 4, 5)
    plain, fused = {"w": start.clone()}, {"w": start.clone()}
    opt_plain = StackedOptimizer(plain, "sgd", lrs, wds, [0.9] * k)
    opt_fused = StackedOptimizer(fused, "sgd", lrs, wds, [0.9] * k)
    assert opt_fused.shared_momentum == pytest.approx(0.9)
    for _ in range(6):
        grads = torch.randn(k, 4, 5)
        opt_plain.step({"w": grads})
        opt_fused.buffers["w"].mul_(opt_fused.shared_momentum).add_(grads)
        opt_fused.step_buffers()
    torch.testing.assert_close(fused["w"], plain["w"], rtol=1e-5, atol=1e-6)
    assert StackedOptimizer({"w": start.clone()}, "sgd", lrs, wds, [0.9, 0.5, 0.9]).shared_momentum is None
    assert StackedOptimizer({"w": start.clone()}, "adam", lrs, wds, [0.9] * k).shared_momentum is None


def test_unknown_optimizer():
    with pytest.raises(ConfigError, match="valid: adam, adamw, sgd"):
        StackedOptimizer({"w": torch.zeros(1, 2)}, "lion", [0.1], [0.0], [0.0])
