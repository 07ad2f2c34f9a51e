"""MaskModel: per-weight mask logits for given frozen random weights, one forward pass.

The frozen weights enter as context tokens: the channel group of a supermask row's tokens that holds
its init (the tokenizer's channels["init_params"]), normalised like the rest. The sequence runs through
the denoiser's DiT blocks, conditioned on the prompt (sparsity, variant, ...) with no timestep, and
output[b, t, k] is the logit that the weight whose value sits at column channels["params"][0] + k of
token t is kept (its mask bit at channels["mask"][0] + k, its frozen value at
channels["init_params"][0] + k). Padding columns produce logits that mean nothing; project with
top-k over real weights.

A logit also gets context * (entry_gain[t, k] + gate(h_t)[k]): keeping a weight depends on its own value
(for signed-constant inits its sign), which the per-token linear read-out of the transformer cannot
express. entry_gain alone is a learned per-entry template (keep where the weight's sign agrees); the
gate lets each token's hidden state adjust it.

Why one pass and no diffusion: an edge-popup mask is close to a function of its init and sparsity
(masks drawn from the same init agree on most weights), so per-weight logits carry what is needed,
and their top-k gives exactly the requested sparsity in one forward pass, where a diffusion chain
would spend many steps to land on a +-1 sample that still needs the same top-k.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from mole.diffusion.blocks import (
    DiTBlock,
    FinalLayer,
    condition_embedders,
    embed_conditions,
    init_dit,
    zero_dit,
)
from mole.errors import ConfigError

GROUPS = ("params", "mask", "init_params")  # the channel groups a supermask row's tokens hold


class MaskModel(ModelMixin, ConfigMixin):
    """DiT over a frozen init's tokens -> one mask logit per weight (see the module docstring).

    Args:
        token_dim: w, the width of one channel group (the context's and the output's channels).
        max_tokens: the longest token sequence (size of the position and entry-gain tables).
        num_layers_ids: distinct layer ids (tokenizer segments); id -1 marks padding.
        channels: the tokenizer's channel groups {"params" | "mask" | "init_params": [start, stop)},
            each w wide (mole.diffusion.conditioning.channel_groups).
        width, depth, heads: transformer width, blocks and attention heads.
        conditions: condition specs, as for the Denoiser.
        mlp_ratio: MLP hidden width over `width`.
        position_embedding: learn one embedding per token position.
        num_frequencies: sin/cos octaves of continuous conditions.
    """

    @register_to_config
    def __init__(
        self,
        token_dim: int,
        max_tokens: int,
        num_layers_ids: int,
        channels: dict | None = None,
        width: int = 32,
        depth: int = 1,
        heads: int = 2,
        conditions: dict | None = None,
        mlp_ratio: float = 4.0,
        position_embedding: bool = True,
        num_frequencies: int = 8,
    ):
        super().__init__()
        if not isinstance(channels, dict) or any(
            g not in channels or channels[g][1] - channels[g][0] != token_dim for g in GROUPS
        ):
            raise ConfigError(
                "mask_model.channels",
                f"needs the groups {', '.join(GROUPS)}, each {token_dim} wide (train on a data module "
                f"with target mask), got {channels!r}",
            )
        if width % heads:
            raise ConfigError("mask_model.heads", f"width {width} is not divisible by {heads} heads")
        # Built in this order: seeded inits draw from the RNG module by module.
        self.context_embed = nn.Linear(token_dim, width)
        self.pos_embed = nn.Embedding(max_tokens, width) if position_embedding else None
        self.layer_embed = nn.Embedding(num_layers_ids + 1, width)  # the last row: padding (id -1)
        self.cond_embedders = condition_embedders(conditions, width, num_frequencies, "mask_model")
        self.blocks = nn.ModuleList(DiTBlock(width, heads, mlp_ratio) for _ in range(depth))
        self.final_layer = FinalLayer(width, token_dim)
        self.entry_gain = nn.Parameter(torch.zeros(max_tokens, token_dim))
        self.entry_gate = nn.Linear(width, token_dim)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's init (init_dit, zero_dit), the entry gain and gate at zero: a new model's logits are zero."""
        init_dit(self, (self.pos_embed, self.layer_embed), self.cond_embedders)
        zero_dit(self.blocks, self.final_layer)
        nn.init.zeros_(self.entry_gain)
        nn.init.zeros_(self.entry_gate.weight)
        nn.init.zeros_(self.entry_gate.bias)

    def embed_conditions(
        self, cond: dict[str, torch.Tensor], batch: int, drop: torch.Tensor | dict | None
    ) -> torch.Tensor:
        """(B, W): the sum of every condition's embedding (mole.diffusion.denoiser.embed_conditions)."""
        device = self.layer_embed.weight.device
        return embed_conditions(self.cond_embedders, self.config.width, cond, batch, drop, device)

    def forward(
        self,
        context: torch.Tensor,
        cond: dict[str, torch.Tensor] | None,
        layer_ids: torch.Tensor,
        token_valid: torch.Tensor | None = None,
        drop: torch.Tensor | dict | None = None,
    ) -> torch.Tensor:
        """Mask logits (B, T, w), one per column of the params channel group.

        Args:
            context: (B, T, w) the frozen weights' channel group of the (normalised) tokens.
            cond: name -> (B,) condition values; missing names get their null embedding.
            layer_ids: (B, T) long segment index of each token, -1 on padding.
            token_valid: (B, T) bool, False on padding tokens (None: all real).
            drop: classifier-free guidance: (B,) bool, or name -> (B,) bool.
        """
        b, t = context.shape[:2]
        cfg = self.config
        if context.shape[-1] != cfg.token_dim:
            raise ValueError(
                f"context has {context.shape[-1]} channels, the mask model expects {cfg.token_dim}"
            )
        if t > cfg.max_tokens:
            raise ValueError(f"{t} tokens, the mask model was built for at most {cfg.max_tokens}")
        layer_ids = torch.where(layer_ids < 0, cfg.num_layers_ids, layer_ids)  # padding row
        h = self.layer_embed(layer_ids)  # (B, T, W)
        if self.pos_embed is not None:
            h = h + self.pos_embed.weight[:t]
        h = h + self.context_embed(context)
        c = self.embed_conditions(cond or {}, b, drop)  # (B, W)
        for block in self.blocks:
            h = block(h, c, token_valid)  # (B, T, W)
        out = self.final_layer(h, c)  # (B, T, w)
        out = out + context * (self.entry_gain[:t] + self.entry_gate(h))  # per-weight value read
        if token_valid is not None:
            out = out * token_valid[..., None]  # padding tokens' logits are exactly zero
        return out
