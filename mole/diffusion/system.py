"""DiffusionSystem: the Denoiser + a diffusers DDPM scheduler + the loss and EMA.

DDPM on normalised tokens: x_t = scheduler.add_noise(x0, noise, t), the denoiser predicts epsilon,
v (scheduler.get_velocity) or x0 ("sample", G.pt), MSE over real tokens; with function_loss > 0,
plus the function-space term on the x0 prediction (mole.diffusion.function_loss). The model folder
is written by mole.diffusion.model_dir.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import DDPMScheduler

from mole.diffusion.conditioning import drop_conditions
from mole.diffusion.denoiser import Denoiser
from mole.diffusion.function_loss import PROJECTED, PerCell
from mole.diffusion.prompts import unconditional
from mole.diffusion.training import (
    LR_SCHEDULES,
    NetSystem,
    check_number,
    check_probability,
    check_target,
    ema_of,
)
from mole.errors import ConfigError, check_choice

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SAMPLING = ("uniform", "logit_normal")


def draw_timesteps(
    how: str, steps: int, n: int, device, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(n,) training timesteps in [0, steps): uniform, or logit-normal (floor(sigmoid(N(0, 1)) * steps),
    clamped into range; Esser et al. 2024)."""
    if how == "uniform":
        return torch.randint(0, steps, (n,), device=device, generator=generator)
    u = torch.sigmoid(torch.randn(n, device=device, generator=generator))
    return (u * steps).long().clamp(0, steps - 1)


def x0_of(scheduler, kind: str, noisy: torch.Tensor, pred: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The clean tokens a "sample" or "v_prediction" prediction implies at timesteps t (B,)."""
    if kind == "sample":
        return pred
    if kind != "v_prediction":
        raise ValueError(f"no stable x0 from a {kind!r} prediction")
    ab = scheduler.alphas_cumprod.to(noisy.device)[t].view(-1, *[1] * (noisy.dim() - 1))
    return ab.sqrt() * noisy - (1 - ab).sqrt() * pred  # x0 = sqrt(ab) x_t - sqrt(1 - ab) v


def guidance_range(value: float | Sequence[float] | None) -> tuple[float, float]:
    """DiffusionSystem.function_guidance as (lo, hi): a number g is (g, g), None is (1, 1)."""
    if value is None:
        return 1.0, 1.0
    if isinstance(value, (int, float)):
        return float(value), float(value)
    return float(value[0]), float(value[1])


def check_function_guidance(value: float | Sequence[float] | None, share: float) -> None:
    """DiffusionSystem's function_guidance (g >= 1, or [lo, hi] with 1 <= lo <= hi) and its share in
    [0, 1], else a ConfigError naming the field."""
    field = "model.function_guidance"
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ConfigError(field, f"must be g or [lo, hi], got {value!r}")
        for g in value:
            check_number(g, field, 1)
        if value[0] > value[1]:
            raise ConfigError(field, f"needs lo <= hi, got {value!r}")
    elif value is not None:
        check_number(value, field, 1)
    check_number(share, "model.function_guidance_share", 0)
    if share > 1:
        raise ConfigError("model.function_guidance_share", f"must be in [0, 1], got {share!r}")


# DDPM defaults for normalised tokens: no clipping (tokens are not images in [-1, 1]), cosine betas.
SCHEDULER_DEFAULTS = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "clip_sample": False}


# ---------------------------------------------------------------------------- the system
class DiffusionSystem(NetSystem):
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
        lr_schedule: after the warm-up, "constant" or "cosine" (a half cosine to 0 at the trainer's
            max_steps; on the learning-to-learn pairs recipe it measured worse, docs/results.md L16).
        timestep_sampling: how training draws the noise level t: "uniform" over the scheduler's
            timesteps, or "logit_normal" (t / T = sigmoid(n), n ~ N(0, 1): Esser et al. 2024's
            weighting, most draws at middle noise levels; on the pairs recipe it measured worse, L20).
        ema_decay: decay of the exported EMA copy.
        cond_drop_prob: classifier-free guidance dropout (see conditioning.drop_conditions): every
            condition at once, and each alone unless `cond_drop_each` says otherwise.
        cond_drop_each: the probability of dropping each condition alone; None: cond_drop_prob.
            Raise it when prompts will leave conditions out (a test_acc prompt without its test_loss).
        cond_drop_keep: conditions the all-at-once dropout keeps, so the unconditional prediction that
            guidance contrasts with is told them (sampling keeps them in its unconditional pass too:
            mole.json's "cond_drop_keep"). A mixed model (mole.diffusion.cells) keeps
            [architecture, task]: its unconditional prediction is otherwise a blend of every
            architecture's, and guidance pushes away from it into no architecture at all.
        function_loss: weight of the function-space term (mole.diffusion.function_loss: KL from the
            member's outputs to those of the predicted x0 on training inputs), 0: weight MSE only.
            Needs prediction_type "sample" or "v_prediction"; it is built in `setup` from the
            trainer's ZooDataModule (or set `system.function`, a PerCell, yourself): each row is
            scored with its own architecture on its own task's inputs (a mixed zoo's rows alike).
        function_inputs: training inputs the functions are compared on (the most, with a budget).
        function_budget: activation elements per network and forward pass the term may write; fewer
            inputs where one costs more (mole.diffusion.function_loss.budgeted_inputs: on the digits
            CNN 169 of 1024), so the term costs about the same per step on any network. None: no cap.
            The quickstart MLP writes 330 per input: a budget >= 1024 * 330 keeps its 1024.
        function_resample: draw the term's inputs afresh from the task's training split at every step
            (as many as `function_inputs` / `function_budget` give) instead of fixing one draw.
        function_sparsities: also score the x0 prediction pruned by global magnitude at one of these
            sparsities (see FunctionLoss), for draws meant to be projected onto them; []: dense only.
        function_projected: score each row whose sparsity, bits or rank is not neutral by its x0
            prediction both as it is and projected onto them, as `mole sample --project` projects a
            draw told them (FunctionLoss.projected), the two KL terms averaged.
        function_rank_residual: with function_projected, a row at a rank also pays this weight
            times the fraction of its x0's linear-weight energy past that rank (FunctionLoss.residual;
            inside the function term, so also weighed by function_loss). 0: none.
        function_guidance: score the function term on the classifier-free-guided x0,
            uncond + g (cond - uncond), as sampling at guidance g reads it: a number is g, [lo, hi]
            draws g ~ U[lo, hi] per row. The unconditional pass (conditions but `cond_drop_keep`
            left out, as sampling's) runs without gradient, so only the conditional prediction
            learns to make guided draws the member's function. None or 1: the conditional x0 alone.
        function_guidance_share: the fraction of rows (drawn per row) whose term reads the guided x0;
            the others read the conditional x0 alone, as without `function_guidance`.
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
        lr_schedule: str = "constant",
        timestep_sampling: str = "uniform",
        ema_decay: float = 0.999,
        cond_drop_prob: float = 0.1,
        cond_drop_keep: list[str] | None = None,
        cond_drop_each: float | None = None,
        function_loss: float = 0.0,
        function_inputs: int = 256,
        function_sparsities: list[float] | None = None,
        function_budget: int | None = None,
        function_resample: bool = False,
        function_projected: bool = False,
        function_rank_residual: float = 0.0,
        function_guidance: float | list[float] | None = None,
        function_guidance_share: float = 1.0,
    ):
        super().__init__()
        check_choice(prediction_type, PREDICTION_TYPES, "model.prediction_type")
        check_probability(cond_drop_prob, "model.cond_drop_prob")
        check_probability(cond_drop_each, "model.cond_drop_each", nullable=True)
        check_number(function_loss, "model.function_loss", 0)
        check_function_guidance(function_guidance, function_guidance_share)
        check_number(function_rank_residual, "model.function_rank_residual", 0)
        if function_rank_residual and not function_projected:
            raise ConfigError(
                "model.function_rank_residual", "needs function_projected: true (it reads the rows' ranks)"
            )
        check_choice(lr_schedule, LR_SCHEDULES, "model.lr_schedule")
        check_choice(timestep_sampling, TIMESTEP_SAMPLING, "model.timestep_sampling")
        unknown = sorted(set(cond_drop_keep or []) - set(net.config.conditions or {}))
        if unknown:
            raise ConfigError(
                "model.cond_drop_keep",
                f"{unknown} are not conditions of the net: {', '.join(net.config.conditions or {})}",
            )
        if function_budget is not None and (
            isinstance(function_budget, bool) or not isinstance(function_budget, int) or function_budget < 1
        ):
            raise ConfigError(
                "model.function_budget",
                f"must be a positive integer (activation elements) or null, got {function_budget!r}",
            )
        if getattr(net.config, "self_condition", False) and prediction_type == "epsilon":
            raise ConfigError(
                "model.net.self_condition",
                "needs prediction_type 'sample' or 'v_prediction' (the x0 estimate it feeds back from "
                "an epsilon prediction divides by sqrt(alpha_bar), which explodes at high noise)",
            )
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
        self.function: PerCell | None = None  # built in setup when function_loss > 0

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        check_target(datamodule, self.TARGET)
        if self.hparams.function_loss and self.function is None:
            if datamodule is None:
                raise ConfigError(
                    "model.function_loss", "needs the trainer's ZooDataModule, or set system.function"
                )
            self.function = PerCell.from_datamodule(
                datamodule,
                self.hparams.function_inputs,
                sparsities=self.hparams.function_sparsities or (),
                budget=self.hparams.function_budget,
                rank_residual=self.hparams.get("function_rank_residual", 0.0),
                resample=self.hparams.get("function_resample", False),
            )

    def model_meta(self) -> dict[str, Any]:
        """This kind's entries of mole.json (mole.diffusion.model_dir)."""
        return {
            "target": self.TARGET,
            "prediction_type": self.scheduler.config.prediction_type,
            "context_dim": self.net.config.context_dim,
            "cond_drop_keep": list(self.hparams.cond_drop_keep or []),
        }

    # ------------------------------------------------------------------ loss
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
            names, b, self.hparams.cond_drop_prob if drop else 0.0, tokens.device, generator,
            self.hparams.cond_drop_keep or (), self.hparams.get("cond_drop_each") if drop else 0.0,
        )  # fmt: skip
        noise = torch.randn(tokens.shape, device=tokens.device, generator=generator)
        t = draw_timesteps(
            self.hparams.get("timestep_sampling", "uniform"), self.scheduler.config.num_train_timesteps, b,
            tokens.device, generator,
        )  # fmt: skip
        noisy = self.scheduler.add_noise(tokens, noise, t)  # (B, T, D)
        kind = self.scheduler.config.prediction_type
        start = batch.get("start_tokens")
        estimate = None
        if getattr(model.config, "self_condition", False):
            # half the batches read the model's own x0 (no gradient), the others "no estimate yet"
            if torch.rand((), device=tokens.device, generator=generator) < 0.5:
                with torch.no_grad():
                    first = model(noisy, t, cond, ids, valid, start, dropped)
                    estimate = x0_of(self.scheduler, kind, noisy, first, t)
        pred = model(noisy, t, cond, ids, valid, start, dropped, estimate)
        if kind == "epsilon":
            want = noise
        elif kind == "v_prediction":
            want = self.scheduler.get_velocity(tokens, noise, t)
        else:
            want = tokens
        mse = ((pred - want) ** 2).mean(-1)  # (B, T)
        loss = (mse * valid).sum() / valid.sum().clamp(min=1)
        if self.function is not None and self.hparams.function_loss:
            lo, hi = guidance_range(self.hparams.get("function_guidance"))
            if hi > 1:  # the function of the guided draw, as sampling at guidance g makes it
                with torch.no_grad():
                    uncond = model(
                        noisy,
                        t,
                        unconditional(cond, self.hparams.cond_drop_keep or ()),
                        ids,
                        valid,
                        start,
                        None,
                        estimate,
                    )
                g = lo + (hi - lo) * torch.rand(b, device=tokens.device, generator=generator)  # (B,)
                share = self.hparams.get("function_guidance_share", 1.0)
                if share < 1:  # the other rows score the conditional x0, g = 1
                    g = torch.where(torch.rand(b, device=tokens.device, generator=generator) < share, g, 1.0)
                pred = uncond + g[:, None, None] * (pred - uncond)
            pred = x0_of(self.scheduler, kind, noisy, pred, t)
            levels = None
            if self.hparams.get("function_projected"):
                levels = {k: batch["cond"][k] for k in PROJECTED if k in batch.get("cond", {})}
            teacher = batch.get("teacher_tokens", tokens)  # a pruned row's dense parent (data.dense_teacher)
            loss = loss + self.hparams.function_loss * self.function(
                pred, teacher, batch.get("cell"), levels, generator
            )
        return loss
