"""quantized: post-training (PTQ) and quantization-aware (QAT, straight-through) weight quantization.

Options:
    bits: 8, 4, 2 or "ternary", or a list of them (each level is one config).
    mode: "ptq" (round the trained dense member) or "qat" (train from the member's init with fake
        quantization and a straight-through estimator, then round), or a list of both.
    scale: how the symmetric grid's per-channel scale is chosen: "mse" (default; the clip of least
        rounding error) or "absmax" (max|w|, nothing clipped). Ternary ignores it. Sampling projects
        generated weights with "mse" whatever the zoo used.

Every config stores, per member, `codes` (int8), `scales` (one per output channel), `bits`, and the
effective `params` whose weights are exactly code * scale. See mole.zoo.quant for the grids.
"""

from __future__ import annotations

import json

import torch

from mole.errors import ConfigError, check_choice
from mole.nets import Params
from mole.zoo.quant import (
    LEVELS,
    SCALES,
    TERNARY,
    fake_quantize,
    level_bits,
    quantize_params,
    weight_error,
)
from mole.zoo.train import train_stacked
from mole.zoo.variants.base import GroupContext, Record, Snapshot, Variant

MODES = ("ptq", "qat")


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


class Quantized(Variant):
    """Quantized members at each (bits, mode) of the options.

    Args:
        bits: bit-width(s): 8, 4, 2 or "ternary".
        mode: "ptq", "qat" or both.
        scale: the symmetric grid's scale rule, "mse" or "absmax".
    """

    name = "quantized"

    def __init__(self, bits=(8, 4, 2), mode="ptq", scale="mse", **unknown):
        field = f"variants.{self.name}"
        if unknown:
            raise ConfigError(
                f"{field}.options", f"unknown option(s) {sorted(unknown)}; valid: bits, mode, scale"
            )
        check_choice(scale, SCALES, f"{field}.scale")
        levels = _as_list(bits)
        valid = ", ".join(str(x) for x in LEVELS)
        for b in levels:
            if isinstance(b, bool) or b not in LEVELS:
                raise ConfigError(f"{field}.bits", f"unsupported bit-width {b!r}; valid: {valid}")
        modes = _as_list(mode)
        for m in modes:
            if m not in MODES:
                raise ConfigError(f"{field}.mode", f"unknown mode {m!r}; valid: {', '.join(MODES)}")
        for key, values in (("bits", levels), ("mode", modes)):
            if not values or len(set(map(str, values))) != len(values):
                raise ConfigError(f"{field}.{key}", f"needs distinct values, got {values}")
        super().__init__(bits=levels, mode=modes, scale=scale)

    def configs(self) -> list[dict]:
        out = []
        for mode in self.options["mode"]:
            for level in self.options["bits"]:
                scheme = TERNARY if level == TERNARY else "symmetric"
                out.append({"bits": level_bits(level), "mode": mode, "scheme": scheme})
        return out

    def tag(self, config: dict) -> str:
        grid = "ternary" if config["scheme"] == TERNARY else f"b{config['bits']}"
        return f"{self.name}-{grid}-{config['mode']}"

    def extra_steps(self, ctx: GroupContext, config: dict) -> int:
        return ctx.total_steps if config["mode"] == "qat" else 0

    def run(self, ctx: GroupContext, config: dict) -> list[Record]:
        level = TERNARY if config["scheme"] == TERNARY else config["bits"]
        if config["mode"] == "ptq":
            source = ctx.dense().final
            step, latent = source.step, source.params
            reference = source.metrics  # the float member this was rounded from
        else:
            latent = self._train_qat(ctx, level)
            step, reference = ctx.total_steps, None
        q = quantize_params(ctx.arch, latent, level, self.options["scale"])
        snap = Snapshot(step, q.params, ctx.evaluate(q.params))
        err = weight_error(ctx.arch, latent, q.params)  # (K,)
        finite = torch.isfinite(ctx.arch.flatten(latent)).all(1)  # (K,) False: QAT diverged
        extra = []
        for k in range(ctx.k):
            e = {"scheme": config["scheme"], "mode": config["mode"], "scale": self.options["scale"]}
            e["finite"] = bool(finite[k])
            e["weight_rel_error"] = float(err[k])
            if reference is not None:
                e["float_test_acc"] = float(reference["test_acc"][k])
            extra.append(json.dumps(e, sort_keys=True))
        return ctx.records(
            self.tag(config),
            self.name,
            config,
            snap,
            final=True,
            codes=q.codes,
            scales=q.scales,
            bits=config["bits"],
            extra=extra,
        )

    def _train_qat(self, ctx: GroupContext, level) -> Params:
        """Train all K members from their init through fake-quantized weights; return latent weights."""
        names, scale = ctx.arch.weight_names(), self.options["scale"]

        def forward(params: Params, x):
            return ctx.arch.forward_stacked(fake_quantize(params, names, level, scale), x)

        return train_stacked(
            forward, ctx.init_params(), ctx.data, ctx.group.members, on_progress=ctx.on_progress
        )
