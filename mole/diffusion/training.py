"""What the two Lightning systems share (DiffusionSystem, MaskSystem): the exported EMA copy, the hooks,
AdamW with a warm-up, and their option checks."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch.optim.swa_utils import AveragedModel

from mole.errors import ConfigError, check_choice


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


LR_SCHEDULES = ("constant", "cosine")


def lr_factor(
    step: int, warmup_steps: int, schedule: str = "constant", total_steps: int | None = None
) -> float:
    """The learning rate's multiplier at optimizer step `step`: a linear warm-up over `warmup_steps`,
    then 1 ("constant") or a half cosine from 1 to 0 at `total_steps` ("cosine")."""
    warm = max(1, warmup_steps)
    if step + 1 < warm or schedule == "constant":
        return min(1.0, (step + 1) / warm)
    done = min(1.0, (step + 1 - warm) / max(1, total_steps - warm))
    return 0.5 * (1.0 + math.cos(math.pi * done))


def fused_on_cpu(groups: list[dict]) -> bool | None:
    """AdamW's `fused` for these parameter groups: True when every parameter lives on the CPU, where
    torch's default is a loop of ~10 elementwise passes per tensor and the fused kernel one (5-7x
    faster on a 7-52M-parameter denoiser, docs/results.md W21; the two agree to float rounding).
    None (torch's default, `foreach` on CUDA) elsewhere: a GPU step is not bound by it, and Lightning's
    mixed precision refuses fused optimizers with gradient clipping."""
    params = [p for g in groups for p in g["params"]]
    return True if params and all(p.device.type == "cpu" for p in params) else None


def adamw_with_warmup(groups: list[dict], lr: float, weight_decay: float, warmup_steps: int,
                      schedule: str = "constant", total_steps: int | None = None) -> dict:  # fmt: skip
    """configure_optimizers' answer: AdamW over `groups`, its rate scaled by `lr_factor` (a linear
    warm-up, then constant or a cosine decay to 0 at `total_steps`, the trainer's max_steps)."""
    check_choice(schedule, LR_SCHEDULES, "model.lr_schedule")
    if schedule == "cosine" and (total_steps is None or total_steps <= warmup_steps):
        raise ConfigError(
            "model.lr_schedule", f"cosine needs trainer.max_steps above warmup_steps, got {total_steps}"
        )
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused_on_cpu(groups))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, warmup_steps, schedule, total_steps)
    )
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def check_number(value: Any, field: str, low: float, strict: bool = False) -> None:
    """A real number >= low (> low when strict), else a ConfigError naming `field`."""
    bad = isinstance(value, bool) or not isinstance(value, (int, float))
    if bad or value < low or (strict and value == low):
        raise ConfigError(field, f"must be a number {'>' if strict else '>='} {low:g}, got {value!r}")


def check_probability(value: Any, field: str, nullable: bool = False) -> None:
    """A number in [0, 1) (or None when `nullable`), else a ConfigError naming `field`."""
    if value is None and nullable:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(field, f"must be in [0, 1){' or null' if nullable else ''}, got {value!r}")


def batch_conditions(batch: dict, specs: dict) -> dict[str, torch.Tensor]:
    """The batch's conditions a model knows (`specs`: its config's), continuous ones as float."""
    cond = batch["cond"]
    return {
        n: cond[n].float() if specs[n]["kind"] == "continuous" else cond[n].long() for n in specs if n in cond
    }


def check_target(datamodule, target: str) -> None:
    """A system trains on its own kind of rows: the data module's `target` must be `target`."""
    have = getattr(datamodule, "target", target)
    if have != target:
        raise ConfigError(
            "data.target",
            f"is {have!r}, this system learns from {target!r} rows "
            "(weights: mole.diffusion.system.DiffusionSystem; mask: mole.masks.system.MaskSystem)",
        )


class NetSystem(L.LightningModule):
    """Trains `self.net` on ZooDataModule batches through `loss` and keeps its EMA copy `self.ema`
    (what forward runs, validation scores and the model folder exports).

    A subclass sets TARGET (the data module's target it learns from), builds `net` and
    `ema = ema_of(net, decay)` and saves lr, weight_decay, warmup_steps and lr_schedule as hyperparameters in its
    __init__, and defines `loss` (and `param_groups` when some parameters need their own rate).
    """

    TARGET = ""

    def forward(self, *args, **kwargs) -> torch.Tensor:
        """Inference with the EMA copy (same arguments as the net's forward)."""
        return self.ema.module(*args, **kwargs)

    def conditions(self, batch: dict) -> dict[str, torch.Tensor]:
        """The batch's conditions the net knows, continuous ones as float."""
        return batch_conditions(batch, self.net.config.conditions or {})

    def param_groups(self) -> list[dict]:
        """AdamW's parameter groups: the whole net at the system's rate."""
        return [{"params": list(self.net.parameters())}]

    # ------------------------------------------------------------------ Lightning hooks
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["tokens"].shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.ema.update_parameters(self.net)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # the same noise and dropout every time: the EMA copy scored on fixed draws
        g = torch.Generator(device=batch["tokens"].device).manual_seed(batch_idx)
        loss = self.loss(batch, self.ema.module, generator=g, drop=False)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["tokens"].shape[0])

    def configure_optimizers(self):
        hp = self.hparams
        schedule = hp.get("lr_schedule", "constant")  # models saved before the option: constant
        total = self._trainer.max_steps if self._trainer is not None else None  # none: a test's own loop
        return adamw_with_warmup(
            self.param_groups(), hp.lr, hp.weight_decay, hp.warmup_steps, schedule, total
        )
