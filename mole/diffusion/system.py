"""DiffusionSystem: the Denoiser + a diffusers DDPM scheduler + the loss and EMA.

DDPM on normalised tokens: x_t = scheduler.add_noise(x0, noise, t), the denoiser predicts epsilon,
v (scheduler.get_velocity) or x0 ("sample", G.pt), MSE over real tokens; with function_loss > 0,
plus the function-space term on the x0 prediction (mole.diffusion.function_loss). The model folder
is written by mole.diffusion.model_dir.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from diffusers import DDPMScheduler
from torch.optim.swa_utils import AveragedModel

from mole.data import load_task
from mole.diffusion.conditioning import drop_conditions
from mole.diffusion.denoiser import Denoiser
from mole.diffusion.function_loss import FunctionLoss, zoo_task
from mole.errors import ConfigError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# DDPM defaults for normalised tokens: no clipping (tokens are not images in [-1, 1]), cosine betas.
SCHEDULER_DEFAULTS = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "clip_sample": False}


# ---------------------------------------------------------------------------- shared by both systems
def ema_update(decay: float):
    """multi_avg_fn for AveragedModel: EMA with DiT-style warm-up min(decay, (1 + n) / (10 + n)),
    so short runs export an average of their recent weights, not of their init."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        n = float(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        torch._foreach_lerp_(averaged, current, 1 - d)

    return update


def ema_of(net: torch.nn.Module, decay: float) -> AveragedModel:
    """The exported EMA copy of `net`, frozen (DDP must not wait for gradients of the average)."""
    ema = AveragedModel(net, multi_avg_fn=ema_update(decay), use_buffers=False)
    ema.requires_grad_(False)
    return ema


def adamw_with_warmup(groups: list[dict], lr: float, weight_decay: float, warmup_steps: int) -> dict:
    """configure_optimizers' answer: AdamW over `groups` with a linear learning-rate warm-up."""
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    warm = max(1, warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def check_number(value: Any, field: str, low: float, strict: bool = False) -> None:
    """A real number >= low (> low when strict), else a ConfigError naming `field`."""
    bad = isinstance(value, bool) or not isinstance(value, (int, float))
    if bad or value < low or (strict and value == low):
        raise ConfigError(field, f"must be a number {'>' if strict else '>='} {low:g}, got {value!r}")


def batch_conditions(batch: dict, specs: dict) -> dict[str, torch.Tensor]:
    """The batch's conditions a model knows (`specs`: its config's), continuous ones as float."""
    cond = batch["cond"]
    return {
        n: cond[n].float() if specs[n]["kind"] == "continuous" else cond[n].long() for n in specs if n in cond
    }


# ---------------------------------------------------------------------------- the system
class DiffusionSystem(L.LightningModule):
    """Trains a Denoiser on ZooDataModule batches (data target "weights").

    Args:
        net: the denoiser (its config says the conditions and context).
        scheduler: DDPMScheduler options over SCHEDULER_DEFAULTS (e.g. {"num_train_timesteps": 1000}).
        prediction_type: "sample" (x0, G.pt's choice and the default), "epsilon" or "v_prediction".
            x0 regenerates tiny members in far fewer training steps than epsilon (8x fewer on 4 of
            them), whose DDIM steps near t = T divide the error by sqrt(alpha_bar).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear learning-rate warm-up.
        ema_decay: decay of the exported EMA copy.
        cond_drop_prob: classifier-free guidance dropout (see conditioning.drop_conditions).
        function_loss: weight of the function-space term (mole.diffusion.function_loss: KL from the
            member's outputs to those of the predicted x0 on training inputs), 0: weight MSE only.
            Needs prediction_type "sample" or "v_prediction"; it is built in `setup` from the
            trainer's ZooDataModule (or set `system.function` yourself).
        function_inputs: training inputs the functions are compared on.
        function_sparsities: also score the x0 prediction pruned by global magnitude at one of these
            sparsities (see FunctionLoss), for draws meant to be projected onto them; []: dense only.
    """

    TARGET = "weights"  # the data module's target this system learns from

    def __init__(
        self,
        net: Denoiser,
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
    ):
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ConfigError(
                "model.prediction_type", f"unknown {prediction_type!r}; valid: {', '.join(PREDICTION_TYPES)}"
            )
        if not 0 <= cond_drop_prob < 1:
            raise ConfigError("model.cond_drop_prob", f"must be in [0, 1), got {cond_drop_prob}")
        check_number(function_loss, "model.function_loss", 0)
        if function_loss and prediction_type == "epsilon":
            raise ConfigError(
                "model.function_loss",
                "needs prediction_type 'sample' or 'v_prediction' (x0 from an epsilon prediction "
                "divides by sqrt(alpha_bar), which explodes at high noise)",
            )
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.scheduler = DDPMScheduler(
            **{**SCHEDULER_DEFAULTS, **(scheduler or {}), "prediction_type": prediction_type}
        )
        self.ema = ema_of(net, ema_decay)
        self.function: FunctionLoss | None = None  # built in setup when function_loss > 0

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        check_target(datamodule, self.TARGET)
        if self.hparams.function_loss and self.function is None:
            if datamodule is None:
                raise ConfigError(
                    "model.function_loss", "needs the trainer's ZooDataModule, or set system.function"
                )
            task, options = zoo_task(datamodule)
            self.function = FunctionLoss.from_datamodule(
                datamodule,
                self.hparams.function_inputs,
                sparsities=self.hparams.function_sparsities or (),
                data=load_task(task, **options),
            )

    def model_meta(self) -> dict[str, Any]:
        """This kind's entries of mole.json (mole.diffusion.model_dir)."""
        return {
            "target": self.TARGET,
            "prediction_type": self.scheduler.config.prediction_type,
            "context_dim": self.net.config.context_dim,
        }

    # ------------------------------------------------------------------ inference
    def forward(self, *args, **kwargs) -> torch.Tensor:
        """Inference with the EMA denoiser (same arguments as Denoiser.forward)."""
        return self.ema.module(*args, **kwargs)

    # ------------------------------------------------------------------ loss
    def conditions(self, batch: dict) -> dict[str, torch.Tensor]:
        """The batch's conditions the denoiser knows, continuous ones as float."""
        return batch_conditions(batch, self.net.config.conditions or {})

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
        model = model or self.net
        tokens, valid, ids = batch["tokens"], batch["token_valid"], batch["layer_ids"]  # (B, T, D), (B, T)
        b = tokens.shape[0]
        cond = self.conditions(batch)
        names = list(self.net.config.conditions or {})
        dropped = drop_conditions(
            names, b, self.hparams.cond_drop_prob if drop else 0.0, tokens.device, generator
        )
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

    # ------------------------------------------------------------------ Lightning hooks
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["tokens"].shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.ema.update_parameters(self.net)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        g = torch.Generator(device=batch["tokens"].device).manual_seed(batch_idx)  # the same noise every time
        loss = self.loss(batch, self.ema.module, generator=g, drop=False)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["tokens"].shape[0])

    def configure_optimizers(self):
        hp = self.hparams
        return adamw_with_warmup(
            [{"params": list(self.net.parameters())}], hp.lr, hp.weight_decay, hp.warmup_steps
        )


def check_target(datamodule, target: str) -> None:
    """A system trains on its own kind of rows: the data module's `target` must be `target`."""
    have = getattr(datamodule, "target", target)
    if have != target:
        raise ConfigError(
            "data.target",
            f"is {have!r}, this system learns from {target!r} rows "
            "(weights: mole.diffusion.system.DiffusionSystem; mask: mole.masks.system.MaskSystem)",
        )
