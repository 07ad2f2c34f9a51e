"""MaskSystem: the MaskModel + its loss, EMA and the entry gain's own learning rate.

The model's logits over the frozen weights of a supermask row are scored two ways:
    mask_bce       binary cross-entropy on the row's mask bits over its real weight entries;
    function_loss  the masked network itself (FunctionLoss.masked): the init under the logits'
                   layer-wise top-k at the row's sparsity, against the edge-popup member on that
                   init, with edge-popup's straight-through gradient.
BCE alone fits the training inits' bits and samples at chance on unseen inits; the function term
scores any mask by what its network computes. With `mask_prior`, the logits are a correction added
to the least-squares construction's scores (mole.masks.construction) before the top-k, in training
and in sampling.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mole.data import load_task
from mole.diffusion.conditioning import drop_conditions
from mole.diffusion.function_loss import FunctionLoss, zoo_task
from mole.diffusion.training import (
    LR_SCHEDULES,
    NetSystem,
    check_number,
    check_probability,
    check_target,
    ema_of,
)
from mole.errors import ConfigError, check_choice
from mole.masks.construction import check_prior, prior_data, prior_logits
from mole.masks.model import MaskModel


class MaskSystem(NetSystem):
    """Trains a MaskModel on the supermask rows of a ZooDataModule (data target "mask").

    Args:
        net: the mask model (its config says the conditions and channel groups).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear learning-rate warm-up.
        lr_schedule: after the warm-up, "constant" or "cosine" (a half cosine to 0 at the trainer's
            max_steps; on the learning-to-learn pairs recipe it measured worse, docs/results.md L16).
        ema_decay: decay of the exported EMA copy.
        cond_drop_prob: classifier-free guidance dropout (see conditioning.drop_conditions).
        function_loss: weight of FunctionLoss.masked (the frozen init under the logits' layer-wise
            top-k at the row's sparsity, against the row's member); built in `setup` from the
            trainer's ZooDataModule (or set `system.function` yourself).
        function_inputs: training inputs the functions are compared on.
        mask_bce: weight of the BCE on the member's mask bits.
        mask_prior: add the least-squares construction's standardised scores to the logits before
            the top-k, in training and in sampling (mole.masks.construction; options weight, ridge,
            passes, inputs; {} for the defaults, None for none). Needs function_loss > 0 and mask_bce
            0, and the task's data (from the trainer's datamodule, or set `system.prior_data`).
        entry_gain_lr: learning rate of the model's per-entry gain (None: lr). Trained through the
            masked network, the transformer's share of the logits must learn much slower than the
            gain: at one rate it swamps the gain's ranking and the loss stays at its start.
    """

    TARGET = "mask"  # the data module's target this system learns from

    def __init__(
        self,
        net: MaskModel,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        lr_schedule: str = "constant",
        ema_decay: float = 0.999,
        cond_drop_prob: float = 0.1,
        function_loss: float = 0.0,
        function_inputs: int = 256,
        mask_bce: float = 1.0,
        entry_gain_lr: float | None = None,
        mask_prior: dict | None = None,
    ):
        super().__init__()
        check_probability(cond_drop_prob, "model.cond_drop_prob")
        check_number(function_loss, "model.function_loss", 0)
        check_choice(lr_schedule, LR_SCHEDULES, "model.lr_schedule")
        if entry_gain_lr is not None:
            check_number(entry_gain_lr, "model.entry_gain_lr", 0, strict=True)
        check_number(mask_bce, "model.mask_bce", 0)
        if not (mask_bce or function_loss):
            raise ConfigError("model.mask_bce", "mask_bce and function_loss are both 0: nothing to train on")
        mask_prior = check_prior(mask_prior)
        if mask_prior is not None and (mask_bce or not function_loss):
            raise ConfigError(
                "model.mask_prior",
                "is for a model trained through the masked networks (function_loss > 0, mask_bce 0): "
                "the prior is added to the logits before their top-k, which BCE on mask bits never sees",
            )
        self.save_hyperparameters(ignore=["net"])
        self.hparams.mask_prior = mask_prior  # with its defaults filled in
        self.net = net
        self.ema = ema_of(net, ema_decay)
        self.function: FunctionLoss | None = None  # built in setup when function_loss > 0
        self.prior_data: tuple[torch.Tensor, torch.Tensor] | None = None  # (x, y), built in setup

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        check_target(datamodule, self.TARGET)
        data = None  # the task, loaded once for the function term and the prior
        if self.hparams.function_loss and self.function is None:
            if datamodule is None:
                raise ConfigError(
                    "model.function_loss", "needs the trainer's ZooDataModule, or set system.function"
                )
            task, options = zoo_task(datamodule)
            data = load_task(task, **options)
            # normalized False: the mask term reads the batch's raw tokens
            self.function = FunctionLoss.from_datamodule(
                datamodule, self.hparams.function_inputs, normalized=False, data=data
            )
        if self.hparams.mask_prior is not None and self.prior_data is None:
            if self.function is None or self.function.task is None:
                raise ConfigError("model.mask_prior", "needs the task's data: set system.prior_data = (x, y)")
            data = data or load_task(self.function.task, **self.function.task_options)
            self.prior_data = prior_data(data, self.hparams.mask_prior["inputs"])

    def model_meta(self) -> dict[str, Any]:
        """This kind's entries of mole.json (mole.diffusion.model_dir)."""
        return {
            "target": self.TARGET,
            "channels": self.net.config.channels,
            "mask_prior": self.hparams.mask_prior,
        }

    # ------------------------------------------------------------------ loss
    def loss(
        self, batch: dict, model: MaskModel | None = None, generator=None, drop: bool = True
    ) -> torch.Tensor:
        """The training loss of a batch.

        Args:
            batch: a ZooDataModule batch of supermask rows (with raw_tokens and entry_valid).
            model: the mask model to score (default: the trained one; validation passes the EMA).
            generator: draws the condition dropout (None: the global RNG).
            drop: apply classifier-free guidance dropout.
        """
        model = model or self.net
        tokens, valid, ids = batch["tokens"], batch["token_valid"], batch["layer_ids"]  # (B, T, D), (B, T)
        names = list(self.net.config.conditions or {})
        dropped = drop_conditions(
            names, tokens.shape[0], self.hparams.cond_drop_prob if drop else 0.0, tokens.device, generator
        )
        ch = model.config.channels
        context = tokens[..., slice(*ch["init_params"])]  # (B, T, w) normalised frozen weights
        bits = (batch["raw_tokens"][..., slice(*ch["mask"])] > 0.5).float()  # (B, T, w)
        entries = batch["entry_valid"][..., slice(*ch["mask"])] & valid[..., None]  # (B, T, w)
        logits = model(context, self.conditions(batch), ids, valid, dropped)  # (B, T, w)
        bce = F.binary_cross_entropy_with_logits(logits, bits, reduction="none")
        loss = self.hparams.mask_bce * (bce * entries).sum() / entries.sum().clamp(min=1)
        if self.function is not None and self.hparams.function_loss:
            raw = batch["raw_tokens"]
            sparsity = batch["cond"]["sparsity"].float()  # (B,) the row's, per weight tensor
            prior = self.prior(raw, ch, sparsity)
            loss = loss + self.hparams.function_loss * self.function.masked(logits, raw, ch, sparsity, prior)
        return loss

    def prior(self, raw: torch.Tensor, channels: dict, sparsity: torch.Tensor) -> dict | None:
        """The mask prior's logits {weight name: (B, *shape)} of the rows' frozen inits (None: no prior)."""
        if self.hparams.mask_prior is None:
            return None
        x, y = (t.to(raw.device) for t in self.prior_data)
        init = self.function.channel(raw, channels, "init_params")
        return prior_logits(self.function.arch, init, sparsity, x, y, self.hparams.mask_prior)

    def param_groups(self) -> list[dict]:
        hp, gain = self.hparams, self.net.entry_gain
        if hp.entry_gain_lr is None:
            return [{"params": list(self.net.parameters())}]
        rest = [p for p in self.net.parameters() if p is not gain]  # the gain at its own rate, no decay
        return [{"params": rest}, {"params": [gain], "lr": hp.entry_gain_lr, "weight_decay": 0.0}]
