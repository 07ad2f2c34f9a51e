"""DiffusionSystem: overfit and regenerate members, pairs context, EMA, the data module's target,
prompt validation."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from mole.diffusion.conditioning import drop_conditions, encode_conditions, model_args
from mole.diffusion.datamodule import ZooDataModule
from mole.diffusion.denoiser import Denoiser
from mole.diffusion.system import DiffusionSystem, draw_timesteps
from mole.diffusion.training import adamw_with_warmup, check_target, fused_on_cpu, lr_factor
from mole.errors import ConfigError
from mole.tokenizer import MemberTensors, NeuronTokenizer
from mole.zoo import store
from tests.tokenizer.helpers import tiny_zoo

TINY = {"width": 32, "depth": 1, "heads": 2}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return tiny_zoo(tmp_path_factory)


def fit(system: DiffusionSystem, batch: dict, steps: int) -> float:
    """Plain full-batch training (the Trainer is exercised by the CLI tests)."""
    opt = system.configure_optimizers()["optimizer"]
    for _ in range(steps):
        loss = system.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        system.ema.update_parameters(system.net)
    return loss.item()


def accuracy(member: MemberTensors, digits) -> float:
    net = member.arch.to_module(member.params).eval()
    with torch.no_grad():
        return (net(digits.x_test).argmax(1) == digits.y_test).float().mean().item()


@pytest.mark.slow  # trains 1k steps
def test_overfit_regenerates_members_via_ddim(zoo, digits):
    """x0 prediction (G.pt's choice) on 4 final members; a plain DDIM loop regenerates networks whose
    test accuracy is within 0.05 of the member they are prompted with (measured: within 0.04)."""
    torch.manual_seed(0)
    rows = [r for r in store.read_zoo(zoo).to_pylist() if r["final"]][:4]
    members = [MemberTensors.from_row(r) for r in rows]
    tok = NeuronTokenizer().fit(members)
    tokens, layouts = zip(*(tok.tokenize(m) for m in members))
    x0 = torch.stack([tok.normalize(t, lay) for t, lay in zip(tokens, layouts)])  # (4, T, D)
    layout = layouts[0]
    ids = tok.layer_ids(layout).expand(4, -1)
    acc = torch.tensor([r["test_acc"] for r in rows], dtype=torch.float32)
    conditions = {"test_acc": {"kind": "continuous", "min": acc.min().item(), "max": acc.max().item()}}
    denoiser = Denoiser(x0.shape[2], x0.shape[1], 2, width=64, depth=1, heads=2, conditions=conditions)
    system = DiffusionSystem(denoiser, prediction_type="sample", lr=1e-2, ema_decay=0.99, cond_drop_prob=0.0)
    batch = {
        "tokens": x0,
        "token_valid": torch.ones(x0.shape[:2], dtype=torch.bool),
        "layer_ids": ids,
        "cond": {"test_acc": acc},
    }
    assert fit(system, batch, 1200) < 0.01

    sched = DDIMScheduler.from_config(system.scheduler.config)
    sched.set_timesteps(50)
    x = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(system(x, t, {"test_acc": acc}, ids), t, x).prev_sample
    generated = [accuracy(tok.detokenize(tok.denormalize(x[i], layout), layout), digits) for i in range(4)]
    wanted = [accuracy(m, digits) for m in members]
    assert wanted == pytest.approx(acc.tolist(), abs=1e-6)
    assert generated == pytest.approx(wanted, abs=0.05)


def test_pairs_mode_feeds_the_starting_checkpoint(zoo, cache):
    dm = ZooDataModule(str(zoo), mode="pairs", batch_size=4, cache_dir=cache)
    args = model_args(dm)
    assert args["context_dim"] == args["token_dim"] and "channels" not in args
    assert {"start_test_loss", "start_test_acc"} <= set(args["conditions"])
    denoiser = Denoiser(**args, **TINY)
    torch.nn.init.normal_(denoiser.final_layer.linear.weight)  # zero-init would hide the gradient path
    system = DiffusionSystem(denoiser, prediction_type="v_prediction")
    batch = next(iter(dm.train_dataloader()))
    system.loss(batch).backward()
    assert denoiser.context_embed.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_losses_and_ema(zoo, cache, prediction_type):
    dm = ZooDataModule(str(zoo), batch_size=4, cache_dir=cache)
    system = DiffusionSystem(
        Denoiser(**model_args(dm), **TINY), prediction_type=prediction_type, ema_decay=0.5
    )
    batch = next(iter(dm.train_dataloader()))
    g = torch.Generator().manual_seed(0)
    assert torch.isfinite(system.loss(batch, generator=g))
    fit(system, batch, 1)  # the first update copies the weights
    for a, b in zip(system.ema.module.parameters(), system.net.parameters()):
        assert torch.equal(a, b)
    fit(system, batch, 2)
    moved = [not torch.equal(a, b) for a, b in zip(system.ema.module.parameters(), system.net.parameters())]
    assert any(moved) and not any(p.requires_grad for p in system.ema.parameters())
    with pytest.raises(ConfigError, match="^model.prediction_type: unknown 'x0'"):
        DiffusionSystem(Denoiser(**model_args(dm), **TINY), prediction_type="x0")
    with pytest.raises(ConfigError, match=r"^model\.cond_drop_prob: must be in \[0, 1\)"):
        DiffusionSystem(Denoiser(**model_args(dm), **TINY), cond_drop_prob=1.0)
    with pytest.raises(
        ConfigError, match=r"^model\.cond_drop_keep: \['shape'\] are not conditions of the net"
    ):
        DiffusionSystem(Denoiser(**model_args(dm), **TINY), cond_drop_keep=["task", "shape"])
    kept = DiffusionSystem(Denoiser(**model_args(dm), **TINY), cond_drop_keep=["architecture", "task"])
    assert kept.model_meta()["cond_drop_keep"] == ["architecture", "task"]  # sampling reads it from mole.json


def test_a_system_learns_from_its_own_kind_of_rows(zoo, cache):
    weights = ZooDataModule(str(zoo), cache_dir=cache)
    check_target(weights, DiffusionSystem.TARGET)
    check_target(None, DiffusionSystem.TARGET)  # no trainer data module (a test's own batches)
    masks = ZooDataModule(str(zoo), target="mask", cache_dir=cache)
    with pytest.raises(
        ConfigError, match=r"^data\.target: is 'mask', this system learns from 'weights' rows"
    ):
        check_target(masks, DiffusionSystem.TARGET)


def test_drop_conditions():
    assert drop_conditions(["a", "b"], 8, 0.0) == {}
    drop = drop_conditions(["a", "b"], 4000, 0.2, generator=torch.Generator().manual_seed(0))
    both = (drop["a"] & drop["b"]).float().mean().item()
    assert drop["a"].float().mean().item() == pytest.approx(0.2 + 0.8 * 0.2, abs=0.03)
    assert both > 0.2 - 0.03  # rows that lose every condition: the unconditional model
    kept = drop_conditions(["a", "b"], 4000, 0.2, generator=torch.Generator().manual_seed(0), keep=["b"])
    assert torch.equal(kept["a"], drop["a"])  # the same draws
    assert kept["b"].float().mean().item() == pytest.approx(0.2, abs=0.03)  # dropped alone only
    # the all-at-once drop now takes "a" and leaves "b": 0.2 * 0.8 more rows lose "a" alone
    assert (kept["a"] & ~kept["b"]).float().mean() > (drop["a"] & ~drop["b"]).float().mean() + 0.1


def test_drop_each_condition_alone_at_its_own_rate():
    g = torch.Generator().manual_seed(0)
    drop = drop_conditions(["a", "b"], 8000, 0.1, generator=g, each=0.5)
    every = drop["a"] & drop["b"]
    # a alone (b kept) needs no all-at-once drop and a's own 0.5: 0.9 * 0.5 * 0.5
    assert (drop["a"] & ~drop["b"]).float().mean().item() == pytest.approx(0.9 * 0.25, abs=0.02)
    assert every.float().mean().item() == pytest.approx(0.1 + 0.9 * 0.25, abs=0.02)
    assert drop_conditions(["a"], 8, 0.0, each=0.0) == {}
    only_each = drop_conditions(["a", "b"], 8000, 0.0, generator=g, each=0.3)  # no unconditional rows
    assert only_each["a"].float().mean().item() == pytest.approx(0.3, abs=0.02)


def test_the_system_drops_each_condition_at_cond_drop_each(zoo, cache, monkeypatch):
    dm = ZooDataModule(str(zoo), batch_size=4, cache_dir=cache)
    seen = []

    def spy(*args, **kwargs):
        seen.append((args[2], args[6]))  # (p, each)
        return drop_conditions(*args, **kwargs)

    monkeypatch.setattr("mole.diffusion.system.drop_conditions", spy)
    batch = next(iter(dm.train_dataloader()))
    for each, drop, wanted in ((0.5, True, (0.1, 0.5)), (None, True, (0.1, None)), (0.5, False, (0.0, 0.0))):
        system = DiffusionSystem(Denoiser(**model_args(dm), **TINY), cond_drop_each=each)
        system.loss(batch, drop=drop)
        assert seen[-1] == wanted
    with pytest.raises(ConfigError, match=r"^model\.cond_drop_each: must be in \[0, 1\) or null, got 1\.0$"):
        DiffusionSystem(Denoiser(**model_args(dm), **TINY), cond_drop_each=1.0)


def test_encode_conditions_validates_prompts():
    meta = {
        "conditions": {
            "test_acc": {"kind": "continuous", "min": 0.12, "max": 0.98},
            "bits": {"kind": "continuous", "min": 2, "max": 32},
            "variant": {"kind": "categorical", "vocab": ["dense", "supermask"]},
        }
    }
    out = encode_conditions(meta, {"test_acc": [0.5, 0.9], "variant": "supermask", "bits": 4})
    assert torch.equal(out["variant"], torch.tensor([1, 1])) and out["test_acc"].dtype == torch.float32
    assert out["bits"].tolist() == [4.0, 4.0] and encode_conditions(meta, {}) == {}
    with pytest.raises(
        ConfigError,
        match=r"^conditions\.test_acc: 0\.999 is outside the trained range \[0\.12, 0\.98\] "
        r"\(past the zoo's best: opt in with --extrapolate true\)$",
    ):
        encode_conditions(meta, {"test_acc": 0.999})
    with pytest.raises(
        ConfigError, match=r"^conditions\.accuracy: unknown condition; valid: test_acc, bits, variant$"
    ):
        encode_conditions(meta, {"accuracy": 0.5})
    with pytest.raises(
        ConfigError, match=r"^conditions\.variant: unknown value 'imp'; valid: dense, supermask$"
    ):
        encode_conditions(meta, {"variant": "imp"})
    with pytest.raises(ConfigError, match=r"^conditions\.bits: nan is outside"):
        encode_conditions(meta, {"bits": float("nan")})
    with pytest.raises(ConfigError, match="^conditions: lists of different lengths"):
        encode_conditions(meta, {"test_acc": [0.5, 0.6], "bits": [4, 8, 8]})


def test_extrapolation_is_an_opt_in_on_the_better_side_only():
    meta = {
        "conditions": {
            "test_acc": {"kind": "continuous", "min": 0.12, "max": 0.98},
            "test_loss": {"kind": "continuous", "min": 0.05, "max": 2.3},
            "bits": {"kind": "continuous", "min": 2, "max": 32},
        }
    }
    out = encode_conditions(meta, {"test_acc": [0.99, 1.0], "test_loss": 0.01}, extrapolate=True)
    assert out["test_acc"].tolist() == pytest.approx([0.99, 1.0])
    assert out["test_loss"].tolist() == pytest.approx([0.01, 0.01])
    with pytest.raises(
        ConfigError,
        match=r"^conditions\.test_loss: 0\.01 is outside the trained range .*--extrapolate true\)$",
    ):
        encode_conditions(meta, {"test_loss": 0.01})
    refused = [  # the worse side, past the bound, and a condition with no better side stay refused
        ({"test_acc": 0.05}, r"^conditions\.test_acc: 0\.05 is outside the allowed range \[0\.12, 1\]$"),
        ({"test_acc": 1.01}, r"^conditions\.test_acc: 1\.01 is outside the allowed range \[0\.12, 1\]$"),
        ({"test_loss": 2.5}, r"^conditions\.test_loss: 2\.5 is outside the allowed range \[0, 2\.3\]$"),
        ({"bits": 64}, r"^conditions\.bits: 64 is outside the trained range \[2, 32\]$"),
    ]
    for prompt, message in refused:
        with pytest.raises(ConfigError, match=message):
            encode_conditions(meta, prompt, extrapolate=True)


def test_lr_schedule_warms_up_then_decays_to_zero_at_max_steps(zoo, cache):
    assert [lr_factor(s, 4) for s in (0, 3, 10)] == [0.25, 1.0, 1.0]  # constant after the warm-up
    cosine = [lr_factor(s, 4, "cosine", 14) for s in (0, 3, 8, 13)]
    assert cosine == pytest.approx([0.25, 1.0, 0.5, 0.0])  # halfway through the decay: half the rate
    dm = ZooDataModule(str(zoo), batch_size=4, cache_dir=cache)
    system = DiffusionSystem(Denoiser(**model_args(dm), **TINY), lr=0.1, warmup_steps=4, lr_schedule="cosine")
    sched = adamw_with_warmup(system.param_groups(), 0.1, 0.0, 4, "cosine", 14)["lr_scheduler"]["scheduler"]
    for _ in range(8):
        sched.optimizer.step()
        sched.step()
    assert sched.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    with pytest.raises(ConfigError, match="^model.lr_schedule: unknown 'linear'; valid: constant, cosine"):
        DiffusionSystem(Denoiser(**model_args(dm), **TINY), lr_schedule="linear")
    with pytest.raises(ConfigError, match="^model.lr_schedule: cosine needs trainer.max_steps above"):
        system.configure_optimizers()  # no trainer: no max_steps to decay to


def test_adamw_is_fused_on_the_cpu_and_matches_the_default_loop():
    cpu = [{"params": [torch.nn.Parameter(torch.randn(7, 5)), torch.nn.Parameter(torch.randn(5))]}]
    assert fused_on_cpu(cpu) is True
    elsewhere = [{"params": [torch.nn.Parameter(torch.randn(3, device="meta"))]}]
    assert fused_on_cpu(elsewhere) is None and fused_on_cpu([{"params": []}]) is None  # torch's default
    opt = adamw_with_warmup(cpu, 0.01, 0.1, 0)["optimizer"]  # no warm-up: the rate is 0.01 throughout
    assert opt.defaults["fused"] is True
    twin = [{"params": [torch.nn.Parameter(p.detach().clone()) for p in cpu[0]["params"]]}]
    start = cpu[0]["params"][0].detach().clone()
    loop = torch.optim.AdamW(twin, lr=0.01, weight_decay=0.1)  # what it replaces: torch's per-tensor loop
    for _ in range(5):
        grads = [torch.randn_like(p) for p in cpu[0]["params"]]
        for p, q, g in zip(cpu[0]["params"], twin[0]["params"], grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        loop.step()
    assert (cpu[0]["params"][0] - start).abs().mean() > 0.005  # five steps of about lr each moved them
    for p, q in zip(cpu[0]["params"], twin[0]["params"]):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_timestep_sampling_uniform_or_logit_normal(zoo, cache):
    g = torch.Generator().manual_seed(0)
    uniform = draw_timesteps("uniform", 1000, 20000, "cpu", g)
    middle = draw_timesteps("logit_normal", 1000, 20000, "cpu", g)
    for t in (uniform, middle):
        assert t.dtype == torch.long and 0 <= int(t.min()) and int(t.max()) <= 999
    share = [((t >= 250) & (t < 750)).float().mean().item() for t in (uniform, middle)]
    assert share[0] == pytest.approx(0.5, abs=0.02) and share[1] == pytest.approx(0.73, abs=0.02)
    dm = ZooDataModule(str(zoo), batch_size=4, cache_dir=cache)
    system = DiffusionSystem(Denoiser(**model_args(dm), **TINY), timestep_sampling="logit_normal")
    batch = next(iter(dm.train_dataloader()))
    assert torch.isfinite(system.loss(batch, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(
        ConfigError, match="^model.timestep_sampling: unknown 'cosine'; valid: uniform, logit_normal"
    ):
        DiffusionSystem(Denoiser(**model_args(dm), **TINY), timestep_sampling="cosine")
