import pytest
import torch
import torch.nn.functional as F

from mole.nets import build_architecture
from mole.zoo.plan import MemberPlan
from mole.zoo.train import data_generators, evaluate_stacked, steps_per_epoch, train_stacked


def _members(k, optimizer="sgd", epochs=1, batch_size=128, momenta=None):
    return [
        MemberPlan(
            i,
            seed=100 + i,
            lr=0.05 * (i + 1),
            weight_decay=1e-4 * i,
            init_scale=1.0,
            momentum=0.9 if momenta is None else momenta[i],
            batch_size=batch_size,
            epochs=epochs,
            optimizer=optimizer,
        )
        for i in range(k)
    ]


@pytest.mark.parametrize(
    "hand_written,momenta",
    [(False, None), (True, None), (True, [0.9, 0.5, 0.0])],
    ids=["autograd", "hand-written into the buffers", "hand-written, momenta differ"],
)
def test_stacked_training_equals_members_trained_alone(digits, hand_written, momenta):
    """Each stacked member follows exactly the trajectory of a plain module trained by itself, with
    autograd or with the MLP's hand-written gradients (folded into shared-momentum buffers or not)."""
    arch = build_architecture("mlp", digits.input_shape, 10, hidden=[16])
    members = _members(3, momenta=momenta)
    init = arch.init_stacked([m.seed for m in members])
    grads = arch.loss_grads_stacked if hand_written else None
    final = train_stacked(
        arch.forward_stacked, {k: v.clone() for k, v in init.items()}, digits, members, grads=grads
    )
    n, spe = len(digits.y_train), steps_per_epoch(len(digits.y_train), 128)
    for i, (m, g) in enumerate(zip(members, data_generators(members))):
        module = arch.to_module(init, index=i)
        opt = torch.optim.SGD(module.parameters(), lr=m.lr, momentum=m.momentum, weight_decay=m.weight_decay)
        perm = torch.randperm(n, generator=g)
        for b in range(spe):
            idx = perm[b * 128 : (b + 1) * 128]
            loss = F.cross_entropy(module(digits.x_train[idx]), digits.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        for name, p in module.state_dict().items():
            torch.testing.assert_close(final[name][i], p, rtol=1e-4, atol=1e-5)


def test_training_learns_digits_and_snapshots_fire(digits):
    arch = build_architecture("mlp", digits.input_shape, 10, hidden=[32])
    members = _members(4, optimizer="adam", epochs=5, batch_size=64)
    for i, m in enumerate(members):
        members[i] = MemberPlan(**{**m.__dict__, "lr": 3e-3})
    params = arch.init_stacked([m.seed for m in members])
    before = evaluate_stacked(arch.forward_stacked, params, digits)
    seen, total = [], 5 * steps_per_epoch(len(digits.y_train), 64)
    final = train_stacked(
        arch.forward_stacked,
        params,
        digits,
        members,
        snapshot_steps=[0, 10, total, total + 1],
        on_snapshot=lambda s, p: seen.append(s),
    )
    after = evaluate_stacked(arch.forward_stacked, final, digits)
    assert seen == [0, 10, total]  # a step past the end never fires
    assert (before["test_acc"] < 0.3).all() and (after["test_acc"] > 0.85).all()
    assert (after["train_loss"] < before["train_loss"]).all()


@pytest.mark.parametrize(
    "name,options,optimizer,hand_written",
    [
        ("mlp", {"hidden": [16]}, "sgd", False),
        ("mlp", {"hidden": [16, 8]}, "sgd", True),
        ("mlp", {"hidden": [16]}, "adam", True),
        ("cnn", {"channels": [3], "hidden": [8]}, "adam", False),
    ],
)
def test_worker_processes_give_bitwise_the_same_members(digits, name, options, optimizer, hand_written):
    """Members split across forked 1-thread workers: same snapshots, same final params, same step count."""
    arch = build_architecture(name, digits.input_shape, 10, **options)
    members = _members(5, optimizer=optimizer, epochs=2, batch_size=256)
    init = arch.init_stacked([m.seed for m in members])
    runs = []
    for processes in (1, 3):
        snaps, progress = [], []
        final = train_stacked(
            arch.forward_stacked,
            {k: v.clone() for k, v in init.items()},
            digits,
            members,
            snapshot_steps=[0, 3, 100],
            on_snapshot=lambda s, p, snaps=snaps: snaps.append((s, {k: v.clone() for k, v in p.items()})),
            on_progress=progress.append,
            processes=processes,
            grads=arch.loss_grads_stacked if hand_written else None,
        )
        runs.append((final, snaps, sum(progress)))
    (final1, snaps1, steps1), (final3, snaps3, steps3) = runs
    assert steps1 == steps3 == 2 * steps_per_epoch(len(digits.y_train), 256)
    assert [s for s, _ in snaps1] == [s for s, _ in snaps3] == [0, 3]
    for (_, a), (_, b) in zip(snaps1, snaps3):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(final1[k], final3[k]) for k in final1)
    assert not torch.equal(final1[arch.weight_names()[0]], init[arch.weight_names()[0]])


def test_worker_processes_refuse_a_per_step_hook(digits):
    arch = build_architecture("mlp", digits.input_shape, 10, hidden=[8])
    members = _members(2)
    with pytest.raises(ValueError, match="after_step"):
        train_stacked(
            arch.forward_stacked, arch.init_stacked([1, 2]), digits, members, after_step=print, processes=2
        )
