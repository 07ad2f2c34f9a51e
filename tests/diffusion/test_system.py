"""DiffusionSystem: overfit and regenerate members, mask target, pairs context, EMA, model folder,
prompt validation."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DDIMScheduler

from mole.data import load_task
from mole.diffusion.conditioning import denoiser_args, drop_conditions, encode_conditions
from mole.diffusion.datamodule import ZooDataModule, collate
from mole.diffusion.denoiser import Denoiser
from mole.diffusion.function_loss import FunctionLoss, topk_straight_through
from mole.diffusion.mask_prior import DEFAULTS, prior_data, prior_logits
from mole.diffusion.sample import sample
from mole.diffusion.system import DiffusionSystem, export_model, load_model
from mole.errors import ConfigError, StoreError
from mole.tokenizer import MemberTensors, NeuronTokenizer
from mole.zoo import store
from mole.zoo.build import build_zoo
from mole.zoo.pruning import masks_from_scores
from mole.zoo.spec import ZooSpec
from tests.conftest import TINY_ZOO
from tests.tokenizer.helpers import tiny_zoo

TINY = {"width": 32, "depth": 1, "heads": 2}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return tiny_zoo(tmp_path_factory)


@pytest.fixture(scope="module")
def mask_zoo(tmp_path_factory):
    """4 tiny MLP members, each dense and as an edge-popup supermask at 50% over a frozen init."""
    spec = {
        **TINY_ZOO,
        "name": "tiny-slth",
        "members": 4,
        "variants": ["dense", {"name": "supermask", "options": {"sparsity": 0.5}}],
    }
    out = tmp_path_factory.mktemp("mask-zoo") / "zoo"
    build_zoo(ZooSpec.from_dict(spec), out, progress=False)
    return out


def mask_rows(mask_zoo, cache) -> tuple[ZooDataModule, dict, dict]:
    """The mask zoo's set-up datamodule, its denoiser args and all its 4 rows as one batch."""
    dm = ZooDataModule(str(mask_zoo), target="mask", fractions=(1.0, 0.0, 0.0), cache_dir=cache)
    dm.setup()
    ds = dm.datasets["train"]
    return dm, denoiser_args(dm), collate([ds[i] for i in range(len(ds))])


def fit(system: DiffusionSystem, batch: dict, steps: int) -> float:
    """Plain full-batch training (the Trainer is exercised by the CLI tests)."""
    opt = system.configure_optimizers()["optimizer"]
    for _ in range(steps):
        loss = system.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        system.ema.update_parameters(system.denoiser)
    return loss.item()


def accuracy(member: MemberTensors, digits) -> float:
    net = member.arch.to_module(member.params).eval()
    with torch.no_grad():
        return (net(digits.x_test).argmax(1) == digits.y_test).float().mean().item()


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


def test_mask_target_overfits_supermasks(mask_zoo, cache):
    torch.manual_seed(0)
    dm = ZooDataModule(str(mask_zoo), target="mask", fractions=(1.0, 0.0, 0.0), cache_dir=cache)
    args = denoiser_args(dm)
    ch = args["channels"]
    w = ch["mask"][1] - ch["mask"][0]
    assert args["token_dim"] == args["context_dim"] == w == 65  # 64 inputs + bias per hidden neuron
    assert ch == {"params": [0, w], "mask": [w, 2 * w], "init_params": [2 * w, 3 * w]}
    ds = dm.datasets["train"]
    assert len(ds) == 4 and all(ds.row(r)["variant"] == "supermask" for r in ds.rows)
    batch = collate([ds[i] for i in range(len(ds))])
    system = DiffusionSystem(Denoiser(**args, **TINY), lr=1e-2, ema_decay=0.9, cond_drop_prob=0.0)
    fit(system, batch, 150)
    context = batch["tokens"][..., slice(*ch["init_params"])]
    with torch.no_grad():
        logits = system(
            torch.zeros_like(context),
            None,
            system.conditions(batch),
            batch["layer_ids"],
            batch["token_valid"],
            context,
        )
    assert logits.shape == context.shape  # one logit per weight channel
    bits = batch["raw_tokens"][..., slice(*ch["mask"])] > 0.5
    weights = batch["entry_valid"][..., slice(*ch["mask"])].clone()
    weights[..., w - 1] = False  # the bias column: never masked
    for i in range(4):  # top-k at the member's own sparsity (what sampling's projection does)
        truth, scores = bits[i][weights[i]], logits[i][weights[i]]
        assert truth.float().mean() == pytest.approx(0.5, abs=0.01)
        guess = torch.zeros_like(truth)
        guess[scores.topk(int(truth.sum())).indices] = True
        assert (guess == truth).float().mean() > 0.9  # chance: 0.5


def test_topk_straight_through_removes_exactly_and_passes_gradients():
    scores = torch.tensor([[0.0, 0.0, 0.0, 0.0], [4.0, 1.0, 3.0, 2.0]], requires_grad=True)
    masks = topk_straight_through(scores, torch.tensor([0.5, 0.25]))
    assert masks.tolist() == [[0, 0, 1, 1], [1, 0, 1, 1]]  # ties broken by position, never all removed
    (masks * torch.arange(4.0)).sum().backward()
    assert scores.grad.tolist() == [[0, 1, 2, 3]] * 2  # d mask / d score = 1 (edge-popup)
    wide = torch.randn(3, 50, requires_grad=True) * 3.3
    assert set(topk_straight_through(wide, torch.tensor([0.3] * 3)).unique().tolist()) == {0.0, 1.0}


def test_mask_prior_enters_training_and_sampling(mask_zoo, cache, tmp_path):
    torch.manual_seed(0)
    dm, args, batch = mask_rows(mask_zoo, cache)
    ch = args["channels"]
    raw, sparsity = batch["raw_tokens"], batch["cond"]["sparsity"].float()

    def system(**options) -> DiffusionSystem:
        s = DiffusionSystem(
            Denoiser(**args, **TINY), cond_drop_prob=0.0, function_loss=1.0, mask_bce=0.0, **options
        )
        s.function = FunctionLoss.from_datamodule(dm, 64, normalized=False)
        if s.hparams.mask_prior is not None:  # as setup draws them
            data = load_task(s.function.task, **s.function.task_options)
            s.prior_data = prior_data(data, s.hparams.mask_prior["inputs"])
        return s

    plain, built = system(), system(mask_prior={"passes": 2})
    assert built.hparams.mask_prior == {**DEFAULTS, "passes": 2}
    prior = built.prior(raw, ch, sparsity)
    init = built.function.channel(raw, ch, "init_params")
    expect = prior_logits(built.function.arch, init, sparsity, *built.prior_data, built.hparams.mask_prior)
    assert all(torch.equal(prior[n], expect[n]) for n in expect)
    zero = torch.zeros_like(raw[..., slice(*ch["params"])])  # an untrained denoiser's logits
    with torch.no_grad():  # the term scores the prior's top-k, not the (positional) top-k of zeros
        assert built.loss(batch).item() == pytest.approx(
            built.function.masked(zero, raw, ch, sparsity, prior)
        )
        assert plain.loss(batch).item() == pytest.approx(built.function.masked(zero, raw, ch, sparsity))
        assert built.loss(batch).item() != pytest.approx(plain.loss(batch).item())

    # the model folder records the prior and sampling adds it: an untrained model's masks are the
    # construction's top-k on the drawn inits
    path = export_model(built, dm, tmp_path / "model")
    assert load_model(path)[3]["mask_prior"] == built.hparams.mask_prior
    nets = sample(path, {"sparsity": 0.5}, num=3, seed=2)
    inits = {n: torch.stack([m.init_params[n] for m in nets]) for n in nets[0].init_params}
    half = torch.full((3,), 0.5)
    want = prior_logits(built.function.arch, inits, half, *built.prior_data, built.hparams.mask_prior)
    for n, keep in masks_from_scores(want, 0.5, "layerwise").items():  # sampling's projection
        assert torch.equal(torch.stack([m.mask[n] for m in nets]), keep)

    with pytest.raises(ConfigError, match=r"^model\.mask_prior: is for target 'mask' trained through"):
        DiffusionSystem(Denoiser(**args, **TINY), function_loss=1.0, mask_prior={})  # BCE on
    with pytest.raises(ConfigError, match=r"^model\.mask_prior\.ridge: must be a number > 0"):
        system(mask_prior={"ridge": -1.0})


def test_mask_function_term_scores_the_masked_network(mask_zoo, cache, digits):
    torch.manual_seed(0)
    dm, args, batch = mask_rows(mask_zoo, cache)
    ch = args["channels"]
    raw, sparsity = batch["raw_tokens"], batch["cond"]["sparsity"]
    fn = FunctionLoss.from_datamodule(dm, 64, normalized=False)
    bits = raw[..., slice(*ch["mask"])]
    assert fn.masked(bits * 2 - 1, raw, ch, sparsity).item() == pytest.approx(0.0, abs=1e-7)  # its own mask
    assert fn.masked(torch.randn_like(bits), raw, ch, sparsity).item() > 0.05
    with pytest.raises(ConfigError, match=r"^function_loss: the mask term needs the 'init_params'"):
        fn.masked(bits, raw, {"params": ch["params"]}, sparsity)

    # trained through the masked network only (no BCE), the gain at its own rate: the term falls
    system = DiffusionSystem(
        Denoiser(**args, **TINY),
        lr=1e-5,
        entry_gain_lr=3e-3,
        cond_drop_prob=0.0,
        function_loss=1.0,
        mask_bce=0.0,
    )
    system.function = fn
    groups = system.configure_optimizers()["optimizer"].param_groups
    assert [g["lr"] for g in groups] == [1e-5, 3e-3] and groups[1]["params"] == [system.denoiser.entry_gain]
    with torch.no_grad():
        start = system.loss(batch).item()
    end = fit(system, batch, 100)
    assert end < 0.5 * start
    with pytest.raises(ConfigError, match=r"^model\.mask_bce: mask_bce and function_loss are both 0"):
        DiffusionSystem(Denoiser(**args, **TINY), mask_bce=0.0)
    with pytest.raises(ConfigError, match=r"^model\.entry_gain_lr: must be a number > 0"):
        DiffusionSystem(Denoiser(**args, **TINY), entry_gain_lr=0.0)


def test_mask_logits_read_each_weights_value(mask_zoo, cache):
    dm = ZooDataModule(str(mask_zoo), target="mask", fractions=(1.0, 0.0, 0.0), cache_dir=cache)
    dm.setup()
    den = Denoiser(**denoiser_args(dm), **TINY)
    ds = dm.datasets["train"]
    batch = collate([ds[i] for i in range(2)])
    context = batch["tokens"][..., slice(*den.config.channels["init_params"])]
    args = (torch.zeros_like(context), None, {}, batch["layer_ids"], batch["token_valid"], context)
    assert den(*args).abs().max() == 0  # DiT's zero init, the gain too
    with torch.no_grad():
        den.entry_gain.fill_(2.0)
    torch.testing.assert_close(den(*args), 2 * context * batch["token_valid"][..., None])


def test_pairs_mode_feeds_the_starting_checkpoint(zoo, cache):
    dm = ZooDataModule(str(zoo), mode="pairs", batch_size=4, cache_dir=cache)
    args = denoiser_args(dm)
    assert args["context_dim"] == args["token_dim"] and args["target"] == "weights"
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
        Denoiser(**denoiser_args(dm), **TINY), prediction_type=prediction_type, ema_decay=0.5
    )
    batch = next(iter(dm.train_dataloader()))
    g = torch.Generator().manual_seed(0)
    assert torch.isfinite(system.loss(batch, generator=g))
    fit(system, batch, 1)  # the first update copies the weights
    for a, b in zip(system.ema.module.parameters(), system.denoiser.parameters()):
        assert torch.equal(a, b)
    fit(system, batch, 2)
    moved = [
        not torch.equal(a, b) for a, b in zip(system.ema.module.parameters(), system.denoiser.parameters())
    ]
    assert any(moved) and not any(p.requires_grad for p in system.ema.parameters())
    with pytest.raises(ConfigError, match="^model.prediction_type: unknown 'x0'"):
        DiffusionSystem(Denoiser(**denoiser_args(dm), **TINY), prediction_type="x0")


def test_drop_conditions():
    assert drop_conditions(["a", "b"], 8, 0.0) == {}
    drop = drop_conditions(["a", "b"], 4000, 0.2, generator=torch.Generator().manual_seed(0))
    both = (drop["a"] & drop["b"]).float().mean().item()
    assert drop["a"].float().mean().item() == pytest.approx(0.2 + 0.8 * 0.2, abs=0.03)
    assert both > 0.2 - 0.03  # rows that lose every condition: the unconditional model


def test_export_and_load_model(zoo, cache, tmp_path):
    dm = ZooDataModule(str(zoo), batch_size=4, cache_dir=cache)
    system = DiffusionSystem(Denoiser(**denoiser_args(dm), **TINY), prediction_type="sample")
    batch = next(iter(dm.train_dataloader()))
    fit(system, batch, 3)
    path = export_model(system, dm, tmp_path / "model")
    export_model(system, dm, tmp_path / "model")  # replacing a model folder works, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left
    denoiser, scheduler, tokenizer, meta = load_model(path)
    t = torch.tensor([3, 500, 900, 999])
    cond = system.conditions(batch)
    args = (batch["tokens"], t, cond, batch["layer_ids"], batch["token_valid"])
    with torch.no_grad():
        assert torch.equal(denoiser(*args), system(*args))
    assert scheduler.config.prediction_type == meta["prediction_type"] == "sample"
    assert tokenizer.name == meta["tokenizer"] == "neuron" and tokenizer.stats is not None
    assert (meta["architecture"], meta["arch_config"]["hidden"], meta["task"]) == ("mlp", [16], "digits")
    assert meta["target"] == "weights" and meta["conditions"]["variant"] == {
        "kind": "categorical",
        "vocab": ["dense"],
    }
    acc = meta["conditions"]["test_acc"]
    train_rows = store.read_zoo(zoo, columns=["test_acc"]).take(dm.datasets["train"].rows).to_pylist()
    assert (acc["min"], acc["max"]) == (
        min(r["test_acc"] for r in train_rows),
        max(r["test_acc"] for r in train_rows),
    )
    assert json.loads((path / "mole.json").read_text()) == meta
    with pytest.raises(StoreError, match="not a mole model folder"):
        load_model(tmp_path)


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
        ConfigError, match=r"^conditions\.test_acc: 0\.999 is outside the trained range \[0\.12, 0\.98\]$"
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
