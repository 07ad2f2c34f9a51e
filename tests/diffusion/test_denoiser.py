"""Denoiser: shapes, padding, null conditions, save_pretrained round trip, sizes, the global path."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from mole.diffusion.denoiser import DENOISER_SIZES, Denoiser
from mole.errors import ConfigError

B, T, D = 3, 7, 5
CONDITIONS = {
    "test_acc": {"kind": "continuous", "min": 0.1, "max": 0.9},
    "variant": {"kind": "categorical", "vocab": ["dense", "supermask"]},
}


def perturbed(model: Denoiser, seed: int = 0) -> Denoiser:
    """Zero-initialised adaLN and decoder make every output 0: randomise them so tests see something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def tiny(**kw) -> Denoiser:
    args = {
        "token_dim": D,
        "max_tokens": 8,
        "num_layers_ids": 2,
        "conditions": CONDITIONS,
        **DENOISER_SIZES["tiny"],
    }
    return Denoiser(**{**args, **kw})


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g)  # (B, T, D)
    ids = torch.tensor([0, 0, 0, 1, 1, 1, 1]).expand(B, T).clone()  # (B, T)
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[1, 5:] = False  # row 1 has two padding tokens
    ids[1, 5:] = -1
    cond = {"test_acc": torch.tensor([0.2, 0.5, 0.8]), "variant": torch.tensor([0, 1, 0])}
    return x, torch.tensor([10, 500, 999]), cond, ids, valid


def test_starts_at_zero_and_keeps_shapes():
    x, t, cond, ids, valid = inputs()
    model = tiny()
    out = model(x, t, cond, ids, valid)
    assert out.shape == (B, T, D) and torch.count_nonzero(out) == 0  # adaLN-zero, zero decoder
    out = perturbed(model)(x, t, cond, ids, valid)
    assert out.shape == (B, T, D) and out.abs().sum() > 0
    assert torch.count_nonzero(out[1, 5:]) == 0  # padding tokens predict zero


def test_padding_does_not_leak_into_real_tokens():
    x, t, cond, ids, valid = inputs()
    model = perturbed(tiny())
    out = model(x, t, cond, ids, valid)
    x2 = x.clone()
    x2[1, 5:] = 100.0  # garbage in the padding
    assert torch.allclose(model(x2, t, cond, ids, valid), out, atol=1e-6)
    x3 = x.clone()
    x3[1, 0] += 1.0  # a real token does reach the others
    assert not torch.allclose(model(x3, t, cond, ids, valid)[1, 1], out[1, 1])


def test_missing_dropped_and_null_conditions_agree():
    x, t, cond, ids, valid = inputs()
    model = perturbed(tiny())
    missing = model(x, t, {"variant": cond["variant"]}, ids, valid)
    dropped = model(x, t, cond, ids, valid, drop={"test_acc": torch.ones(B, dtype=torch.bool)})
    nan = model(x, t, {**cond, "test_acc": torch.full((B,), float("nan"))}, ids, valid)
    assert torch.allclose(missing, dropped) and torch.allclose(missing, nan)
    assert not torch.allclose(missing, model(x, t, cond, ids, valid))
    none = model(x, t, {}, ids, valid)
    assert torch.allclose(none, model(x, t, cond, ids, valid, drop=torch.ones(B, dtype=torch.bool)))
    assert torch.allclose(none, model(x, t, {"variant": torch.full((B,), -1)}, ids, valid))
    with pytest.raises(ConfigError, match=r"^cond\.accuracy: unknown condition; valid: test_acc, variant$"):
        model(x, t, {"accuracy": cond["test_acc"]}, ids, valid)


def ddim_sample(model: Denoiser, scheduler, seed: int) -> torch.Tensor:
    _, _, cond, ids, valid = inputs()
    g = torch.Generator().manual_seed(seed)
    sched = DDIMScheduler.from_config(scheduler.config)
    sched.set_timesteps(5)
    x = torch.randn(B, T, D, generator=g)
    with torch.no_grad():
        for step in sched.timesteps:
            x = sched.step(model(x, step, cond, ids, valid), step, x).prev_sample
    return x


def test_save_pretrained_round_trip(tmp_path):
    model = perturbed(tiny(context_dim=D))
    model.save_pretrained(tmp_path / "denoiser")
    again = Denoiser.from_pretrained(tmp_path / "denoiser", low_cpu_mem_usage=False).eval()
    public = lambda m: {k: v for k, v in m.config.items() if not k.startswith("_")}  # noqa: E731
    assert public(again) == public(model) and again.config.conditions == CONDITIONS
    x, t, cond, ids, valid = inputs()
    assert torch.equal(model(x, t, cond, ids, valid, x), again(x, t, cond, ids, valid, x))
    scheduler = DDPMScheduler(num_train_timesteps=100, clip_sample=False)
    scheduler.save_pretrained(tmp_path / "scheduler")
    reloaded = DDPMScheduler.from_pretrained(tmp_path / "scheduler")
    plain = tiny()  # no context: the sampler's plain call
    plain.load_state_dict(perturbed(tiny(), seed=3).state_dict())
    plain.save_pretrained(tmp_path / "plain")
    a = ddim_sample(plain, scheduler, seed=7)
    b = ddim_sample(
        Denoiser.from_pretrained(tmp_path / "plain", low_cpu_mem_usage=False).eval(), reloaded, seed=7
    )
    assert torch.equal(a, b) and not torch.equal(a, ddim_sample(plain, scheduler, seed=8))


def test_sizes_and_bad_configs():
    assert set(DENOISER_SIZES) == {"tiny", "small", "base"}
    assert DENOISER_SIZES["tiny"] == {"width": 32, "depth": 1, "heads": 2}
    model = Denoiser.sized("small", token_dim=D, max_tokens=8, num_layers_ids=2)
    assert (model.config.width, model.config.depth) == (128, 4)
    with pytest.raises(ConfigError, match="^denoiser.size: unknown 'huge'"):
        Denoiser.sized("huge", token_dim=D, max_tokens=8, num_layers_ids=2)
    with pytest.raises(TypeError, match="target"):  # one model, one kind: masks are mole.masks.model
        tiny(target="mask")
    with pytest.raises(ConfigError, match=r"^denoiser\.conditions\.test_acc: needs kind in"):
        tiny(conditions={"test_acc": {"kind": "ordinal"}})
    with pytest.raises(ConfigError, match="^denoiser.heads"):
        tiny(heads=3)
    x, t, cond, ids, valid = inputs()
    with pytest.raises(ValueError, match="the denoiser was built for at most 4"):
        tiny(max_tokens=4)(x, t, cond, ids, valid)


def test_global_path_starts_as_the_plain_dit_and_round_trips(tmp_path):
    x, t, cond, ids, valid = inputs()
    model = tiny(global_rank=3)
    assert torch.count_nonzero(model(x, t, cond, ids, valid)) == 0  # U starts at zero
    model = perturbed(model)
    out = model(x, t, cond, ids, valid)
    plain = model.global_path
    model.global_path = None
    alone = model(x, t, cond, ids, valid)
    model.global_path = plain
    assert not torch.allclose(out, alone)  # the path adds something once trained
    # It is affine in the (real) tokens for a fixed conditioning, its offset follows the conditioning
    # (the prompt moves the mean), and padding does not reach it.
    c = model.embed_conditions(cond, B, None) + model.t_embedder(t)
    xv = x * valid[..., None]
    zero = torch.zeros_like(xv)
    assert torch.allclose(plain(2 * xv, c) + plain(zero, c), 2 * plain(xv, c), atol=1e-5)
    assert not torch.allclose(plain(zero, c), plain(zero, c.flip(0)))
    x2 = x.clone()
    x2[1, 5:] = 100.0
    assert torch.allclose(model(x2, t, cond, ids, valid), out, atol=1e-6)
    model.save_pretrained(tmp_path / "denoiser")
    again = Denoiser.from_pretrained(tmp_path / "denoiser", low_cpu_mem_usage=False).eval()
    assert again.config.global_rank == 3 and torch.equal(again(x, t, cond, ids, valid), out)
    with pytest.raises(ConfigError, match="^denoiser.global_rank: must be >= 0"):
        tiny(global_rank=-1)


def test_global_budget_cuts_the_rank_to_fit_and_round_trips(tmp_path):
    size = 8 * D  # max_tokens * token_dim: U and V hold 2 * size parameters per direction
    assert tiny(global_rank=6, global_budget=None).global_rank_used == 6  # no cap
    assert tiny(global_rank=6, global_budget=2 * size * 6).global_rank_used == 6  # fits exactly
    cut = tiny(global_rank=6, global_budget=2 * size * 4 + 1)
    assert cut.global_rank_used == 4 and cut.global_path.down.weight.shape == (4, size)
    assert (
        sum(p.numel() for p in (cut.global_path.down.weight, cut.global_path.up.weight)) <= 2 * size * 4 + 1
    )
    assert tiny(global_rank=6, global_budget=1).global_rank_used == 1  # a path asked for keeps one direction
    assert tiny(global_rank=0, global_budget=10**6).global_path is None  # a budget adds no path
    cut.save_pretrained(tmp_path / "denoiser")
    again = Denoiser.from_pretrained(tmp_path / "denoiser", low_cpu_mem_usage=False)
    assert again.config.global_budget == 2 * size * 4 + 1 and again.global_rank_used == 4
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ConfigError, match="^denoiser.global_budget: must be a positive number"):
            tiny(global_rank=6, global_budget=bad)


def test_context_skip_copies_the_gated_start_and_leaves_other_models_alone(tmp_path):
    x, t, cond, ids, valid = inputs()
    ctx = torch.randn(B, T, D, generator=torch.Generator().manual_seed(5))  # (B, T, D) a start's tokens
    torch.manual_seed(0)
    plain = tiny(context_dim=D)
    torch.manual_seed(0)
    model = tiny(context_dim=D, context_skip=True)
    for name, p in plain.state_dict().items():  # built last: every other weight draws as before
        assert torch.equal(model.state_dict()[name], p), name
    assert torch.count_nonzero(model(x, t, cond, ids, valid, ctx)) == 0  # its gate starts at zero
    model = perturbed(model)
    out = model(x, t, cond, ids, valid, ctx)
    c = model.embed_conditions(cond, B, None) + model.t_embedder(t)
    gated = model.context_out(c).unsqueeze(1) * ctx * valid[..., None]
    gate, model.context_out = model.context_out, None
    assert torch.allclose(
        out - model(x, t, cond, ids, valid, ctx), gated, atol=1e-6
    )  # exactly the gated copy
    model.context_out = gate
    model.save_pretrained(tmp_path / "denoiser")
    again = Denoiser.from_pretrained(tmp_path / "denoiser", low_cpu_mem_usage=False).eval()
    assert again.config.context_skip and torch.equal(again(x, t, cond, ids, valid, ctx), out)
    with pytest.raises(ConfigError, match="^denoiser.context_skip: needs context_dim == token_dim"):
        tiny(context_dim=0, context_skip=True)


def test_log_conditions_spread_a_positive_range_over_decades():
    from mole.diffusion.blocks import ScalarEmbedder

    torch.manual_seed(0)
    lin, log = ScalarEmbedder(8, 0.01, 1.0, log=False), ScalarEmbedder(8, 0.01, 1.0, log=True)
    log.load_state_dict(lin.state_dict())  # the same MLP: only the map onto [-1, 1] differs
    keep = torch.zeros(3, dtype=torch.bool)
    v = torch.tensor([0.01, 0.1, 1.0])
    # the decade 0.01..0.1 is the lower half of the log range, 9% of the linear one
    assert torch.allclose(log(v, keep), lin(torch.tensor([0.01, 0.505, 1.0]), keep), atol=1e-5)
    assert torch.equal(log(v, torch.ones(3, dtype=torch.bool)), lin(v, torch.ones(3, dtype=torch.bool)))
    v = torch.tensor([0.5, 0.0, float("nan")], requires_grad=True)  # dropped rows: no NaN in the gradient
    log(v, torch.tensor([False, True, False])).sum().backward()
    assert torch.isfinite(v.grad).all()
    specs = {"test_loss": {"kind": "continuous", "min": 0.05, "max": 2.3}, **CONDITIONS}
    model = perturbed(tiny(conditions=specs, log_conditions=["test_loss"]))
    assert model.cond_embedders["test_loss"].log and not model.cond_embedders["test_acc"].log
    x, t, cond, ids, valid = inputs()
    out = model(x, t, {**cond, "test_loss": torch.tensor([0.06, 0.5, 2.0])}, ids, valid)
    assert torch.isfinite(out).all()
    with pytest.raises(ConfigError, match=r"^denoiser\.log_conditions: 'variant' is not a continuous"):
        tiny(log_conditions=["variant"])
    with pytest.raises(ConfigError, match=r"^denoiser\.log_conditions: 'test_acc' needs positive values"):
        tiny(
            conditions={"test_acc": {"kind": "continuous", "min": 0.0, "max": 1.0}},
            log_conditions=["test_acc"],
        )


def test_condition_init_xavier_spreads_continuous_conditions_over_their_range(tmp_path):
    # DiT's two N(0, 0.02) layers (the default) give an embedding that barely moves over the range and
    # learns too slowly for a 2000-step weights recipe to follow prompts; "xavier" leaves them at
    # Xavier (docs/results.md X27). Categorical tables stay N(0, 0.02) either way.
    v = torch.linspace(0.1, 0.9, 32)
    keep = torch.zeros(32, dtype=torch.bool)
    spread = {}
    for how in ("dit", "xavier"):
        torch.manual_seed(0)
        model = tiny(condition_init=how)
        with torch.no_grad():
            emb = model.cond_embedders["test_acc"](v, keep)  # (32, W)
        spread[how] = float((emb - emb.mean(0)).norm(dim=1).mean())
        assert model.cond_embedders["variant"].table.weight.std() < 0.03
        assert model.config.condition_init == how
    assert spread["dit"] < 0.1 < 0.5 < spread["xavier"]
    assert tiny().config.condition_init == "dit"
    model.save_pretrained(tmp_path / "denoiser")  # the last one built: xavier
    again = Denoiser.from_pretrained(tmp_path / "denoiser", low_cpu_mem_usage=False)
    assert again.config.condition_init == "xavier"
    with pytest.raises(ConfigError, match=r"^denoiser\.condition_init: unknown 'he'; valid: dit, xavier"):
        tiny(condition_init="he")
