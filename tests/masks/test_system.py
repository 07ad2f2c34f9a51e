"""MaskSystem: BCE overfits supermasks, the function term and the mask prior, the gain's own rate,
a Lightning training step, bad options."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from mole.data import load_task
from mole.diffusion.conditioning import model_args
from mole.diffusion.datamodule import ZooDataModule
from mole.diffusion.function_loss import FunctionLoss
from mole.diffusion.model_dir import export_model, load_model
from mole.diffusion.options import SampleOptions
from mole.diffusion.sample import sample
from mole.errors import ConfigError
from mole.masks.construction import DEFAULTS, prior_data, prior_logits
from mole.masks.model import MaskModel
from mole.masks.system import MaskSystem
from mole.zoo.pruning import masks_from_scores
from tests.masks.helpers import TINY, mask_rows


def fit(system: MaskSystem, batch: dict, steps: int) -> float:
    """Plain full-batch training (the Trainer is exercised below and by the CLI tests)."""
    opt = system.configure_optimizers()["optimizer"]
    for _ in range(steps):
        loss = system.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        system.ema.update_parameters(system.net)
    return loss.item()


def test_bce_overfits_supermasks(mask_zoo, cache):
    torch.manual_seed(0)
    dm, args, batch = mask_rows(mask_zoo, cache)
    ch = args["channels"]
    w = ch["mask"][1] - ch["mask"][0]
    assert args["token_dim"] == w == 65 and "context_dim" not in args  # 64 inputs + bias per hidden neuron
    assert ch == {"params": [0, w], "mask": [w, 2 * w], "init_params": [2 * w, 3 * w]}
    ds = dm.datasets["train"]
    assert len(ds) == 4 and all(ds.row(r)["variant"] == "supermask" for r in ds.rows)
    system = MaskSystem(MaskModel(**args, **TINY), lr=1e-2, ema_decay=0.9, cond_drop_prob=0.0)
    fit(system, batch, 150)
    context = batch["tokens"][..., slice(*ch["init_params"])]
    with torch.no_grad():
        logits = system(context, system.conditions(batch), batch["layer_ids"], batch["token_valid"])
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


def test_mask_prior_enters_training_and_sampling(mask_zoo, cache, tmp_path):
    torch.manual_seed(0)
    dm, args, batch = mask_rows(mask_zoo, cache)
    ch = args["channels"]
    raw, sparsity = batch["raw_tokens"], batch["cond"]["sparsity"].float()

    def system(**options) -> MaskSystem:
        s = MaskSystem(
            MaskModel(**args, **TINY), cond_drop_prob=0.0, function_loss=1.0, mask_bce=0.0, **options
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
    zero = torch.zeros_like(raw[..., slice(*ch["params"])])  # an untrained model's logits
    with torch.no_grad():  # the term scores the prior's top-k, not the (positional) top-k of zeros
        assert built.loss(batch).item() == pytest.approx(
            built.function.masked(zero, raw, ch, sparsity, prior)
        )
        assert plain.loss(batch).item() == pytest.approx(built.function.masked(zero, raw, ch, sparsity))
        assert built.loss(batch).item() != pytest.approx(plain.loss(batch).item())

    # the model folder records the prior and sampling adds it: an untrained model's masks are the
    # construction's top-k on the drawn inits
    path = export_model(built, dm, tmp_path / "model")
    assert load_model(path).meta["mask_prior"] == built.hparams.mask_prior
    nets = sample(path, {"sparsity": 0.5}, num=3, options=SampleOptions(seed=2))
    inits = {n: torch.stack([m.init_params[n] for m in nets]) for n in nets[0].init_params}
    half = torch.full((3,), 0.5)
    want = prior_logits(built.function.arch, inits, half, *built.prior_data, built.hparams.mask_prior)
    for n, keep in masks_from_scores(want, 0.5, "layerwise").items():  # sampling's projection
        assert torch.equal(torch.stack([m.mask[n] for m in nets]), keep)

    with pytest.raises(ConfigError, match=r"^model\.mask_prior: is for a model trained through the masked"):
        MaskSystem(MaskModel(**args, **TINY), function_loss=1.0, mask_prior={})  # BCE on
    with pytest.raises(ConfigError, match=r"^model\.mask_prior\.ridge: must be a number > 0"):
        system(mask_prior={"ridge": -1.0})


def test_function_term_scores_the_masked_network(mask_zoo, cache):
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
    system = MaskSystem(
        MaskModel(**args, **TINY),
        lr=1e-5,
        entry_gain_lr=3e-3,
        cond_drop_prob=0.0,
        function_loss=1.0,
        mask_bce=0.0,
    )
    system.function = fn
    groups = system.configure_optimizers()["optimizer"].param_groups
    assert [g["lr"] for g in groups] == [1e-5, 3e-3] and groups[1]["params"] == [system.net.entry_gain]
    assert (
        groups[1]["weight_decay"] == 0.0
        and len(groups[0]["params"]) == len(list(system.net.parameters())) - 1
    )
    with torch.no_grad():
        start = system.loss(batch).item()
    end = fit(system, batch, 100)
    assert end < 0.5 * start


def test_a_lightning_training_step_builds_the_terms_and_moves_the_ema(mask_zoo, cache, tmp_path):
    torch.manual_seed(0)
    dm = ZooDataModule(str(mask_zoo), target="mask", batch_size=2, fractions=(0.5, 0.5, 0.0), cache_dir=cache)
    system = MaskSystem(
        MaskModel(**model_args(dm), **TINY), lr=1e-2, entry_gain_lr=1e-2, function_loss=1.0, mask_bce=0.0,
        function_inputs=32, mask_prior={"inputs": 64, "passes": 1},
    )  # fmt: skip
    start = [p.clone() for p in system.ema.module.parameters()]
    trainer = L.Trainer(
        max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, limit_val_batches=1, val_check_interval=3,
        check_val_every_n_epoch=None,
    )  # fmt: skip
    trainer.fit(system, datamodule=dm)
    assert system.function is not None and system.prior_data[0].shape[0] == 64  # built in setup
    assert torch.isfinite(trainer.callback_metrics["train/loss"]) and "val/loss" in trainer.callback_metrics
    assert any(not torch.equal(a, b) for a, b in zip(start, system.ema.module.parameters()))
    assert not any(p.requires_grad for p in system.ema.parameters())
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():  # validation's loss: its generator draws the same condition dropout every time
        once = system.loss(batch, system.ema.module, generator=torch.Generator().manual_seed(0))
        again = system.loss(batch, system.ema.module, generator=torch.Generator().manual_seed(0))
    assert torch.equal(once, again)


def test_bad_options_are_one_line_errors(mask_zoo, cache, tmp_path):
    _, args, _ = mask_rows(mask_zoo, cache)

    def build(**options):
        return MaskSystem(MaskModel(**args, **TINY), **options)

    with pytest.raises(ConfigError, match=r"^model\.mask_bce: mask_bce and function_loss are both 0"):
        build(mask_bce=0.0)
    with pytest.raises(ConfigError, match=r"^model\.entry_gain_lr: must be a number > 0"):
        build(entry_gain_lr=0.0)
    with pytest.raises(ConfigError, match=r"^model\.mask_bce: must be a number >= 0, got -1"):
        build(mask_bce=-1)
    with pytest.raises(ConfigError, match=r"^model\.function_loss: must be a number >= 0, got True"):
        build(function_loss=True)
    with pytest.raises(ConfigError, match=r"^model\.cond_drop_prob: must be in \[0, 1\)"):
        build(cond_drop_prob=-0.1)
    weights = ZooDataModule(str(mask_zoo), cache_dir=cache)  # target "weights"
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"^data\.target: is 'weights', this system learns from 'mask' rows"
    ):
        trainer.fit(build(), datamodule=weights)
