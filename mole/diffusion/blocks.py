"""The DiT building blocks both generators share: condition and timestep embedders, attention, adaLN-zero
blocks, the final layer, and the helpers that sum the conditions and initialise a DiT (DiT's models.py).

mole.diffusion.denoiser.Denoiser (weights) and mole.masks.model.MaskModel (masks) each compose them with
their own inputs and forward; neither shares the other's forward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mole.conditions import KINDS
from mole.errors import ConfigError


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)  # (B, T, W)


#################################################################################
#               Embedding Layers for Timesteps and Conditions                  #
#################################################################################


class TimestepEmbedder(nn.Module):
    """Embeds scalar timesteps into vector representations (DiT: sinusoidal features + MLP)."""

    def __init__(self, width: int, frequency_size: int = 256):
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(nn.Linear(frequency_size, width), nn.SiLU(), nn.Linear(width, width))

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]  # (B, half)
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.timestep_embedding(t, self.frequency_size))  # (B, W)


class ScalarEmbedder(nn.Module):
    """Embeds a continuous condition with sin/cos frequency features and an MLP (G.pt), after
    mapping its trained range [low, high] onto [-1, 1]; NaN or dropped values get a null embedding.

    Args:
        width: embedding width.
        low, high: the range seen in training (values outside still embed, but sampling refuses them).
        num_frequencies: octaves of sin/cos features.
        log: map log(value) onto [-1, 1] instead (needs low > 0): a loss spanning 0.05 to 2.3 then
            gives its low end, where trained nets differ, as much of the range as its high end.
    """

    def __init__(
        self, width: int, low: float = 0.0, high: float = 1.0, num_frequencies: int = 8, log: bool = False
    ):
        super().__init__()
        if log and not 0 < low <= high:
            raise ValueError(f"a log-scaled condition needs 0 < low <= high, got {low}, {high}")
        self.log = log
        low, high = (math.log(low), math.log(high)) if log else (low, high)
        self.low, self.span = float(low), float(high) - float(low)
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(num_frequencies), persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(2 * num_frequencies + 1, width), nn.SiLU(), nn.Linear(width, width)
        )
        self.null = nn.Parameter(torch.zeros(width))

    def forward(self, v: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        drop = drop | torch.isnan(v)
        v = torch.where(
            drop, 1.0 if self.log else 0.0, v.float()
        )  # NaN would poison the gradients of the kept rows
        if self.log:
            v = torch.log(v.clamp_min(torch.finfo(v.dtype).tiny))
        u = (2 * (v - self.low) / self.span - 1) if self.span > 0 else v - self.low  # (B,)
        args = u[:, None] * self.freqs  # (B, F)
        emb = self.mlp(torch.cat([u[:, None], torch.sin(args), torch.cos(args)], dim=-1))  # (B, W)
        return torch.where(drop[:, None], self.null.to(emb.dtype), emb)


class LabelEmbedder(nn.Module):
    """Embeds categorical ids; the extra last row is the null label (dropped or id < 0)."""

    def __init__(self, num_classes: int, width: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, width)

    def forward(self, ids: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        ids = torch.where(drop | (ids < 0), self.num_classes, ids.long())  # (B,)
        return self.table(ids)  # (B, W)


#################################################################################
#                                 Core DiT Model                                #
#################################################################################


class Attention(nn.Module):
    """Multi-head self-attention; padding keys are masked out."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor | None) -> torch.Tensor:
        b, t, w = x.shape
        q, k, v = (
            self.qkv(x).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        )  # (B, H, T, d)
        mask = None if key_valid is None else key_valid[:, None, None, :]  # (B, 1, 1, T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, d)
        return self.proj(y.transpose(1, 2).reshape(b, t, w))  # (B, T, W)


class DiTBlock(nn.Module):
    """A DiT block with adaptive layer norm zero (adaLN-Zero) conditioning."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width)
        )
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor, key_valid: torch.Tensor | None) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(
            6, dim=1
        )
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), key_valid)
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """The final layer of DiT: adaLN, then a per-token linear decoder back to token channels."""

    def __init__(self, width: int, out_dim: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (B, T, D)


#################################################################################
#                 Shared by the denoiser and the mask model                     #
#################################################################################


def condition_embedders(
    conditions: dict | None, width: int, num_frequencies: int, field: str, log: Sequence[str] = ()
) -> nn.ModuleDict:
    """One embedder per condition spec (see mole.diffusion.conditioning), in sorted name order: the
    saved config.json sorts its keys, and the embeddings' sum must add up in the same order after
    from_pretrained to give bitwise the same outputs.

    Args:
        conditions: name -> {"kind": "continuous", "min": lo, "max": hi} or {"kind": "categorical", "vocab": [...]}.
        width: embedding width.
        num_frequencies: sin/cos octaves of continuous conditions.
        field: how errors name the model's config (e.g. "denoiser").
        log: continuous conditions embedded on a log scale (ScalarEmbedder's `log`).
    """
    for name, spec in (conditions or {}).items():
        if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
            raise ConfigError(f"{field}.conditions.{name}", f"needs kind in {KINDS}, got {spec!r}")
    for name in log:
        spec = (conditions or {}).get(name)
        if spec is None or spec["kind"] != "continuous":
            raise ConfigError(
                f"{field}.log_conditions", f"{name!r} is not a continuous condition of the model"
            )
        if not 0 < spec.get("min", 0.0):
            raise ConfigError(
                f"{field}.log_conditions",
                f"{name!r} needs positive values, its range starts at {spec.get('min', 0.0)}",
            )
    embedders = nn.ModuleDict()
    for name, spec in sorted((conditions or {}).items()):
        if spec["kind"] == "continuous":
            low, high = spec.get("min", 0.0), spec.get("max", 1.0)
            embedders[name] = ScalarEmbedder(width, low, high, num_frequencies, log=name in log)
        else:
            embedders[name] = LabelEmbedder(len(spec["vocab"]), width)
    return embedders


def embed_conditions(
    embedders: nn.ModuleDict,
    width: int,
    cond: dict[str, torch.Tensor],
    batch: int,
    drop: torch.Tensor | dict | None,
    device: torch.device,
) -> torch.Tensor:
    """(B, W): the sum of every condition's embedding (null where missing or dropped).

    Args:
        embedders: name -> embedder (condition_embedders).
        width: W.
        cond: name -> (B,) values (continuous float, categorical long ids); unknown names raise.
        batch: B.
        drop: None, a (B,) bool dropping every condition of a row, or name -> (B,) bool.
        device: where the embeddings live.
    """
    unknown = sorted(set(cond) - set(embedders))
    if unknown:
        raise ConfigError(f"cond.{unknown[0]}", f"unknown condition; valid: {', '.join(embedders)}")
    c = torch.zeros(batch, width, device=device)
    for name, embedder in embedders.items():
        d = drop.get(name) if isinstance(drop, dict) else drop
        d = torch.zeros(batch, dtype=torch.bool, device=device) if d is None else d.to(device).bool()
        if name not in cond:
            v, d = torch.zeros(batch, device=device), torch.ones_like(d)
        else:
            v = cond[name].to(device).reshape(-1).expand(batch)  # a scalar applies to the batch
        c = c + embedder(v, d)
    return c


CONDITION_INITS = ("dit", "xavier")  # how continuous conditions' embedders are drawn (init_dit)


def init_dit(
    model: nn.Module,
    embeddings: Sequence[nn.Embedding | None],
    embedders: nn.ModuleDict,
    condition_init: str = "dit",
) -> None:
    """DiT's init, the random part: Xavier linears, N(0, 0.02) embeddings and condition embedders.

    condition_init "xavier" leaves continuous conditions' embedders at Xavier (categorical tables
    stay N(0, 0.02)). DiT's two N(0, 0.02) layers are a product of two small layers, each one's
    gradient scaled by the other: after a 2000-step weights recipe the digits / MLP model's accuracy
    embedding spread over its range a third as far as the timestep's, and at guidance 1 it drew the
    same nets at every prompt. Xavier spreads it 2.5x as far; with a zoo whose middle accuracies are
    drawable it takes B3 at guidance 6 to Spearman 0.980 (docs/results.md X27), though at guidance 1
    that model still ignores the prompt (X30). Alone it lowered B2 on every other matrix cell (X31)
    and the pairs recipe of B9 measured worse with it (L35), so "dit" stays the default.
    """

    def _basic_init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    model.apply(_basic_init)
    for emb in embeddings:
        if emb is not None:
            nn.init.normal_(emb.weight, std=0.02)
    for m in embedders.values():
        if isinstance(m, LabelEmbedder):
            nn.init.normal_(m.table.weight, std=0.02)
        elif condition_init == "dit":
            nn.init.normal_(m.mlp[0].weight, std=0.02)
            nn.init.normal_(m.mlp[2].weight, std=0.02)


def zero_dit(blocks: nn.ModuleList, final_layer: FinalLayer) -> None:
    """DiT's adaLN-zero: every block starts as the identity and the decoder's output at zero."""
    for block in blocks:
        nn.init.zeros_(block.adaLN_modulation[-1].weight)
        nn.init.zeros_(block.adaLN_modulation[-1].bias)
    nn.init.zeros_(final_layer.adaLN_modulation[-1].weight)
    nn.init.zeros_(final_layer.adaLN_modulation[-1].bias)
    nn.init.zeros_(final_layer.linear.weight)
    nn.init.zeros_(final_layer.linear.bias)
