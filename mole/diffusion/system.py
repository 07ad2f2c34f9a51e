"""DiffusionSystem: the Denoiser + a diffusers DDPM scheduler + the loss, EMA and the model folder.

Two targets (the Denoiser's config.target):
    weights  DDPM on normalised tokens: x_t = scheduler.add_noise(x0, noise, t), the denoiser predicts
             epsilon, v (scheduler.get_velocity) or x0 ("sample", G.pt), MSE over real tokens.
    mask     a one-pass mask predictor over frozen random weights, trained with binary cross-entropy
             on the mask bits of real weight entries (weight `mask_bce`) and, with function_loss > 0,
             through the masked network itself (FunctionLoss.masked: the init under the logits'
             top-k, against the edge-popup member on that init). BCE alone fits the training inits'
             bits and sampled at chance on unseen inits (0.107 test accuracy, edge-popup 0.922); the
             function term without BCE reached 0.642. With `mask_prior`, the logits are a correction
             added to the least-squares construction's scores (mole.diffusion.mask_prior; 0.846 on
             its own, 0.831 with the quickstart's 100-step correction). We chose one-pass
             logits over diffusion on +-1 mask values:
             an edge-popup mask is close to a function of its init and sparsity (masks drawn from
             the same init agree on most weights), so per-weight logits carry what is needed; BCE
             makes them calibrated scores whose top-k gives exactly the requested sparsity in one
             forward pass (B6 asks for one pass), where a diffusion chain would spend many steps to
             land on a +-1 sample that still needs the same top-k projection.

The model folder (`export_model`): denoiser/ (EMA weights, save_pretrained), scheduler/, tokenizer/,
mole.json; written into a temporary folder and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch.optim.swa_utils import AveragedModel

from mole.data import load_task
from mole.diffusion.conditioning import drop_conditions
from mole.diffusion.denoiser import Denoiser
from mole.diffusion.function_loss import FunctionLoss, zoo_task
from mole.diffusion.mask_prior import check_prior, prior_data, prior_logits
from mole.errors import ConfigError, StoreError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# DDPM defaults for normalised tokens: no clipping (tokens are not images in [-1, 1]), cosine betas.
SCHEDULER_DEFAULTS = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "clip_sample": False}
META_FILE = "mole.json"
META_FORMAT = 1


def ema_update(decay: float):
    """multi_avg_fn for AveragedModel: EMA with DiT-style warm-up min(decay, (1 + n) / (10 + n)),
    so short runs export an average of their recent weights, not of their init."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        n = float(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        torch._foreach_lerp_(averaged, current, 1 - d)

    return update


class DiffusionSystem(L.LightningModule):
    """Trains a Denoiser on ZooDataModule batches.

    Args:
        denoiser: the model (its config says the target, conditions and context).
        scheduler: DDPMScheduler options over SCHEDULER_DEFAULTS (e.g. {"num_train_timesteps": 1000}).
        prediction_type: "sample" (x0, G.pt's choice and the default), "epsilon" or "v_prediction",
            for target "weights". Measured on 4 tiny members: x0 regenerates them after 1k steps,
            epsilon needs ~8k (its DDIM steps near t = T divide the error by sqrt(alpha_bar)).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear learning-rate warm-up.
        ema_decay: decay of the exported EMA copy.
        cond_drop_prob: classifier-free guidance dropout (see conditioning.drop_conditions).
        function_loss: weight of the function-space term (mole.diffusion.function_loss: KL from the
            member's outputs to those of the predicted x0 on training inputs), 0: weight MSE only.
            Target "weights" with prediction_type "sample" or "v_prediction"; it is built in
            `setup` from the trainer's ZooDataModule (or set `system.function` yourself).
        function_inputs: training inputs the functions are compared on.
        function_sparsities: also score the x0 prediction pruned by global magnitude at one of these
            sparsities (see FunctionLoss), for draws meant to be projected onto them; []: dense only.
            For target "mask", function_loss weighs FunctionLoss.masked instead: the frozen init
            under the logits' layer-wise top-k at the row's sparsity, against the row's member.
        mask_bce: weight of the BCE on the member's mask bits (target "mask").
        mask_prior: target "mask": add the least-squares construction's standardised scores to the
            logits before the top-k, in training and in sampling (mole.diffusion.mask_prior; options
            weight, ridge, passes, inputs; {} for the defaults, None for none). Needs function_loss > 0
            and mask_bce 0, and the task's data (from the trainer's datamodule).
        entry_gain_lr: learning rate of the denoiser's per-entry gain (target "mask"; None: lr).
            Trained through the masked network, the transformer's share of the logits must learn
            much slower than the gain: at one rate it swamped the gain's ranking and the loss stayed
            at its start (1.30 after 300 steps on the digits supermasks; 0.19 with the transformer at
            1/300 of the gain's rate, 0.32 with the gain alone).
    """

    def __init__(
        self,
        denoiser: Denoiser,
        scheduler: dict | None = None,
        prediction_type: str = "sample",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        ema_decay: float = 0.999,
        cond_drop_prob: float = 0.1,
        function_loss: float = 0.0,
        function_inputs: int = 256,
        function_sparsities: list[float] | None = None,
        mask_bce: float = 1.0,
        entry_gain_lr: float | None = None,
        mask_prior: dict | None = None,
    ):
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ConfigError(
                "model.prediction_type", f"unknown {prediction_type!r}; valid: {', '.join(PREDICTION_TYPES)}"
            )
        if not 0 <= cond_drop_prob < 1:
            raise ConfigError("model.cond_drop_prob", f"must be in [0, 1), got {cond_drop_prob}")
        if (
            isinstance(function_loss, bool)
            or not isinstance(function_loss, (int, float))
            or function_loss < 0
        ):
            raise ConfigError("model.function_loss", f"must be a number >= 0, got {function_loss!r}")
        if function_loss and denoiser.config.target == "weights" and prediction_type == "epsilon":
            raise ConfigError(
                "model.function_loss",
                "needs prediction_type 'sample' or 'v_prediction' for target 'weights' (x0 from an "
                "epsilon prediction divides by sqrt(alpha_bar), which explodes at high noise)",
            )
        if entry_gain_lr is not None and (
            isinstance(entry_gain_lr, bool)
            or not isinstance(entry_gain_lr, (int, float))
            or entry_gain_lr <= 0
        ):
            raise ConfigError("model.entry_gain_lr", f"must be a number > 0 or null, got {entry_gain_lr!r}")
        if isinstance(mask_bce, bool) or not isinstance(mask_bce, (int, float)) or mask_bce < 0:
            raise ConfigError("model.mask_bce", f"must be a number >= 0, got {mask_bce!r}")
        if denoiser.config.target == "mask" and not (mask_bce or function_loss):
            raise ConfigError("model.mask_bce", "mask_bce and function_loss are both 0: nothing to train on")
        mask_prior = check_prior(mask_prior)
        if mask_prior is not None and (denoiser.config.target != "mask" or mask_bce or not function_loss):
            raise ConfigError(
                "model.mask_prior",
                "is for target 'mask' trained through the masked networks (function_loss > 0, mask_bce 0): "
                "the prior is added to the logits before their top-k, which BCE on mask bits never sees",
            )
        self.save_hyperparameters(ignore=["denoiser"])
        self.hparams.mask_prior = mask_prior  # with its defaults filled in
        self.denoiser = denoiser
        self.scheduler = DDPMScheduler(
            **{**SCHEDULER_DEFAULTS, **(scheduler or {}), "prediction_type": prediction_type}
        )
        self.ema = AveragedModel(denoiser, multi_avg_fn=ema_update(ema_decay), use_buffers=False)
        self.ema.requires_grad_(False)  # DDP must not wait for gradients of the average
        self.target = denoiser.config.target
        self.cond_names = list(denoiser.config.conditions or {})
        self.function: FunctionLoss | None = None  # built in setup when function_loss > 0
        self.prior_data: tuple[torch.Tensor, torch.Tensor] | None = None  # (x, y), built in setup

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        data = None  # the task, loaded once for the function term and the prior
        if self.hparams.function_loss and self.function is None:
            if datamodule is None:
                raise ConfigError(
                    "model.function_loss", "needs the trainer's ZooDataModule, or set system.function"
                )
            task, options = zoo_task(datamodule)
            data = load_task(task, **options)
            self.function = FunctionLoss.from_datamodule(
                datamodule,
                self.hparams.function_inputs,
                sparsities=self.hparams.function_sparsities or (),
                normalized=False if self.target == "mask" else None,  # the mask term reads raw tokens
                data=data,
            )
        if self.hparams.mask_prior is not None and self.prior_data is None:
            if self.function is None or self.function.task is None:
                raise ConfigError("model.mask_prior", "needs the task's data: set system.prior_data = (x, y)")
            data = data or load_task(self.function.task, **self.function.task_options)
            self.prior_data = prior_data(data, self.hparams.mask_prior["inputs"])

    # ------------------------------------------------------------------ inference
    def forward(self, *args, **kwargs) -> torch.Tensor:
        """Inference with the EMA denoiser (same arguments as Denoiser.forward)."""
        return self.ema.module(*args, **kwargs)

    # ------------------------------------------------------------------ loss
    def conditions(self, batch: dict) -> dict[str, torch.Tensor]:
        """The batch's conditions the denoiser knows, continuous ones as float."""
        specs = self.denoiser.config.conditions or {}
        cond = batch["cond"]
        return {
            n: cond[n].float() if specs[n]["kind"] == "continuous" else cond[n].long()
            for n in self.cond_names
            if n in cond
        }

    def loss(
        self, batch: dict, model: Denoiser | None = None, generator=None, drop: bool = True
    ) -> torch.Tensor:
        """The training loss of a batch.

        Args:
            batch: a ZooDataModule batch.
            model: the denoiser to score (default: the trained one; validation passes the EMA).
            generator: draws noise, timesteps and condition dropout (None: the global RNG).
            drop: apply classifier-free guidance dropout.
        """
        model = model or self.denoiser
        tokens, valid, ids = batch["tokens"], batch["token_valid"], batch["layer_ids"]  # (B, T, D), (B, T)
        b = tokens.shape[0]
        cond = self.conditions(batch)
        dropped = drop_conditions(
            self.cond_names, b, self.hparams.cond_drop_prob if drop else 0.0, tokens.device, generator
        )
        if self.target == "mask":
            ch = model.config.channels
            context = tokens[..., slice(*ch["init_params"])]  # (B, T, w) normalised frozen weights
            bits = (batch["raw_tokens"][..., slice(*ch["mask"])] > 0.5).float()  # (B, T, w)
            entries = batch["entry_valid"][..., slice(*ch["mask"])] & valid[..., None]  # (B, T, w)
            logits = model(torch.zeros_like(context), None, cond, ids, valid, context, dropped)
            bce = F.binary_cross_entropy_with_logits(logits, bits, reduction="none")
            loss = self.hparams.mask_bce * (bce * entries).sum() / entries.sum().clamp(min=1)
            if self.function is not None and self.hparams.function_loss:
                sparsity = batch["cond"]["sparsity"].float()  # (B,) the row's, per weight tensor
                loss = loss + self.hparams.function_loss * self.function.masked(
                    logits, batch["raw_tokens"], ch, sparsity, self.prior(batch["raw_tokens"], ch, sparsity)
                )
            return loss
        noise = torch.randn(tokens.shape, device=tokens.device, generator=generator)
        t = torch.randint(
            0, self.scheduler.config.num_train_timesteps, (b,), device=tokens.device, generator=generator
        )
        noisy = self.scheduler.add_noise(tokens, noise, t)  # (B, T, D)
        pred = model(noisy, t, cond, ids, valid, batch.get("start_tokens"), dropped)
        kind = self.scheduler.config.prediction_type
        if kind == "epsilon":
            want = noise
        elif kind == "v_prediction":
            want = self.scheduler.get_velocity(tokens, noise, t)
        else:
            want = tokens
        mse = ((pred - want) ** 2).mean(-1)  # (B, T)
        loss = (mse * valid).sum() / valid.sum().clamp(min=1)
        if self.function is not None and self.hparams.function_loss:
            if kind == "v_prediction":  # x0 = sqrt(ab) x_t - sqrt(1 - ab) v
                ab = self.scheduler.alphas_cumprod.to(tokens.device)[t].view(-1, 1, 1)
                pred = ab.sqrt() * noisy - (1 - ab).sqrt() * pred
            loss = loss + self.hparams.function_loss * self.function(pred, tokens)
        return loss

    def prior(self, raw: torch.Tensor, channels: dict, sparsity: torch.Tensor) -> dict | None:
        """The mask prior's logits {weight name: (B, *shape)} of the rows' frozen inits (None: no prior)."""
        if self.hparams.mask_prior is None:
            return None
        x, y = (t.to(raw.device) for t in self.prior_data)
        init = self.function.channel(raw, channels, "init_params")
        return prior_logits(self.function.arch, init, sparsity, x, y, self.hparams.mask_prior)

    # ------------------------------------------------------------------ Lightning hooks
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["tokens"].shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.ema.update_parameters(self.denoiser)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        g = torch.Generator(device=batch["tokens"].device).manual_seed(batch_idx)  # the same noise every time
        loss = self.loss(batch, self.ema.module, generator=g, drop=False)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["tokens"].shape[0])

    def configure_optimizers(self):
        gain = self.denoiser.entry_gain
        rate = self.hparams.entry_gain_lr
        if gain is None or rate is None:
            groups = [{"params": list(self.denoiser.parameters())}]
        else:  # the gain at its own rate (see entry_gain_lr), without weight decay
            rest = [p for p in self.denoiser.parameters() if p is not gain]
            groups = [{"params": rest}, {"params": [gain], "lr": rate, "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        warm = max(1, self.hparams.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# ---------------------------------------------------------------------------- the model folder
def model_meta(system: DiffusionSystem, datamodule) -> dict[str, Any]:
    """mole.json: what sampling needs besides the weights (conditions and their ranges, the zoo's
    architecture, task, tokenizer, target, prediction type, channel groups)."""
    cfg, tok = system.ema.module.config, datamodule.tokenizer
    tasks = list(datamodule.vocab.get("task", []))
    return {
        "format": META_FORMAT,
        "target": cfg.target,
        "prediction_type": system.scheduler.config.prediction_type,
        "mode": datamodule.mode,
        "conditions": dict(cfg.conditions or {}),
        "architecture": tok.architecture,
        "arch_config": tok.arch_config,
        "task": tasks[0] if len(tasks) == 1 else tasks,
        "tokenizer": tok.name,
        "normalized": bool(datamodule.normalize),
        "token_dim": cfg.token_dim,
        "max_tokens": cfg.max_tokens,
        "context_dim": cfg.context_dim,
        "channels": cfg.channels,
        "variants": datamodule.variants,
        "zoo": str(datamodule.zoo),
        "mask_prior": system.hparams.get("mask_prior"),
    }


def export_model(system: DiffusionSystem, datamodule, path: str | Path) -> Path:
    """Write the model folder (EMA denoiser, scheduler, tokenizer, mole.json) atomically.

    Args:
        system: the trained system (its EMA copy is exported).
        datamodule: the set-up ZooDataModule it was trained on (tokenizer, vocabularies).
        path: the folder; replaced whole if it exists.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        system.ema.module.save_pretrained(tmp / "denoiser")
        system.scheduler.save_pretrained(tmp / "scheduler")
        datamodule.tokenizer.save(tmp / "tokenizer")
        (tmp / META_FILE).write_text(
            json.dumps(model_meta(system, datamodule), indent=1, sort_keys=True) + "\n"
        )
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)  # directories cannot be replaced in one rename: move the old aside
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_model(path: str | Path) -> tuple[Denoiser, DDPMScheduler, Any, dict]:
    """(denoiser, scheduler, tokenizer, meta) of a model folder written by `export_model`."""
    from mole.tokenizer import Tokenizer

    path = Path(path)
    for part in ("denoiser", "scheduler", "tokenizer", META_FILE):
        if not (path / part).exists():
            raise StoreError(f"{path}: not a mole model folder ({part} is missing)")
    try:
        meta = json.loads((path / META_FILE).read_text())
    except json.JSONDecodeError as e:
        raise StoreError(f"{path / META_FILE}: corrupt ({e})") from None
    if meta.get("format") != META_FORMAT:
        raise StoreError(f"{path / META_FILE}: format {meta.get('format')!r}, this mole reads {META_FORMAT}")
    # low_cpu_mem_usage needs `accelerate`, which mole does not require: load plainly, quietly.
    denoiser = Denoiser.from_pretrained(path / "denoiser", low_cpu_mem_usage=False).eval()
    scheduler = DDPMScheduler.from_pretrained(path / "scheduler")
    return denoiser, scheduler, Tokenizer.from_dir(path / "tokenizer"), meta


class ExportModel(L.Callback):
    """Exports the model folder when fit ends (global rank 0 only).

    Args:
        path: the model folder (e.g. <run_dir>/model).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_fit_end(self, trainer: L.Trainer, pl_module: DiffusionSystem) -> None:
        if trainer.is_global_zero:
            export_model(pl_module, trainer.datamodule, self.path)
