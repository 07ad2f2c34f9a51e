"""Denoiser: a DiT-style transformer over parameter tokens, conditioned by adaLN-zero.

Each token (one neuron or one chunk of a layer, see mole.tokenizer) is encoded by one linear map,
gets a learned position and layer-id embedding, and the sequence runs through DiT blocks whose
LayerNorms are shifted, scaled and gated by a conditioning vector c: the timestep embedding plus one
embedding per condition (test accuracy, sparsity, variant, ...). Every condition has a null
embedding, used when it is missing, NaN / negative (categorical), or dropped, which is what
classifier-free guidance needs. An optional per-token `context` (a starting checkpoint's tokens in
G.pt pairs) is projected and added to the input. The output is what the scheduler's
prediction_type asks for (epsilon, v or x0), (B, T, token_dim).

The blocks, embedders and the final layer (mole.diffusion.blocks) are shared with the mask model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from mole.diffusion.blocks import (
    CONDITION_INITS,
    DiTBlock,
    FinalLayer,
    TimestepEmbedder,
    condition_embedders,
    embed_conditions,
    init_dit,
    zero_dit,
)
from mole.errors import ConfigError, check_choice

# Named sizes (DiT_models style): tiny for tests, small for the CPU demo, base for GPUs.
DENOISER_SIZES = {
    "tiny": {"width": 32, "depth": 1, "heads": 2},
    "small": {"width": 128, "depth": 4, "heads": 4},
    "base": {"width": 384, "depth": 12, "heads": 6},
}


def global_path_rank(rank: int, budget: int | None, size: int) -> int:
    """The global path's rank: `rank`, cut so that U and V (2 * size * rank parameters) fit `budget`,
    but never below 1 while a path is asked for (rank > 0)."""
    if not rank or budget is None:
        return rank
    return max(1, min(rank, budget // (2 * size)))


class GlobalPath(nn.Module):
    """A global low-rank affine map of the whole noisy sequence, gated and shifted by the conditioning.

    out = U (diag(1 + g(c)) V x + h(c)) over x flattened to (B, T * D). Why: per-token transformer layers,
    whose weights every token shares, find it hard to express what a network's weights share across
    layers, while for Gaussian data the best x0 prediction is exactly of this form (the principal
    directions in V and U, a per-direction shrinkage that depends on the timestep in g, and in h the
    conditional mean, which is what lets the path follow a prompt such as the target accuracy: a gate
    alone shrinks towards one mean for every prompt). On the quickstart zoo, weights drawn from a
    Gaussian with the aligned members' covariance keep most of their accuracy, weights drawn per entry
    fall to 0.52. The transformer learns the rest. U starts at zero, so a new model starts as the
    plain DiT.

    Args:
        size: T * D (max_tokens * token_dim); shorter sequences are zero-padded.
        rank: r, directions.
        width: the conditioning vector's width.
    """

    def __init__(self, size: int, rank: int, width: int):
        super().__init__()
        self.size = size
        self.down = nn.Linear(size, rank, bias=False)  # V
        self.up = nn.Linear(rank, size, bias=False)  # U
        self.gain = nn.Sequential(nn.SiLU(), nn.Linear(width, rank))
        self.shift = nn.Sequential(nn.SiLU(), nn.Linear(width, rank))

    def reset_parameters(self) -> None:
        nn.init.normal_(self.down.weight, std=self.size**-0.5)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.gain[-1].weight)
        nn.init.zeros_(self.gain[-1].bias)
        nn.init.zeros_(self.shift[-1].weight)
        nn.init.zeros_(self.shift[-1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        flat = F.pad(x.reshape(b, t * d), (0, self.size - t * d))  # (B, T_max * D)
        code = self.down(flat) * (1 + self.gain(c)) + self.shift(c)  # (B, r)
        return self.up(code)[:, : t * d].view(b, t, d)  # (B, T, D)


#################################################################################
#                                  The Denoiser                                 #
#################################################################################


class Denoiser(ModelMixin, ConfigMixin):
    """DiT over a zoo member's noisy tokens (see the module docstring).

    Args:
        token_dim: D, channels per token.
        max_tokens: the longest token sequence (size of the position table).
        num_layers_ids: distinct layer ids (tokenizer segments); id -1 marks padding.
        width, depth, heads: transformer width, blocks and attention heads (see DENOISER_SIZES).
        conditions: name -> {"kind": "continuous", "min": lo, "max": hi} (min / max: the range seen in
            training, default 0 / 1) or {"kind": "categorical", "vocab": [...]}.
        context_dim: channels of the per-token context (a G.pt pair's starting tokens; 0: none).
        mlp_ratio: MLP hidden width over `width`.
        position_embedding: learn one embedding per token position (off: tokens of one layer are
            told apart only by their content, as permutation equivariance needs).
        num_frequencies: sin/cos octaves of continuous conditions.
        global_rank: r > 0 adds a global low-rank linear path (see GlobalPath):
            out += U ((1 + gain(c)) * V x + shift(c)) over the whole flattened sequence, next to the
            transformer.
        global_budget: the most parameters the global path may hold (None: no cap). Its rank is cut to
            fit, rank = min(global_rank, global_budget // (2 * max_tokens * token_dim)), at least 1: U
            and V grow with the padded sequence, so a wide network's path would otherwise dwarf the
            rest of the model (a 64-256-128-10 MLP's 394 tokens of 257 values: 52M parameters at
            rank 256, against the quickstart MLP's 4.6M), and its step with it. The rank built is
            `global_rank_used`.
        context_skip: add a condition-gated copy of the context to the output, out += g(c) * context
            (needs context_dim == token_dim; g starts at zero): a G.pt update that moves its start
            a little need not push the whole start through the `width`-channel bottleneck.
        log_conditions: continuous conditions embedded on a log scale (positive ones, e.g. a loss:
            its trained range is then spread evenly over decades, not linearly).
        self_condition: take a previous estimate of the clean tokens as a second input, added to each
            token's embedding (Chen et al. 2022, "Analog Bits"): sampling hands each step the x0
            the step before predicted, training the model's own no-gradient estimate half the time
            and zeros otherwise (DiffusionSystem.loss). Its embedding starts at zero.
        condition_init: "dit" (DiT's N(0, 0.02) layers) or "xavier" for the continuous conditions'
            embedders (mole.diffusion.blocks.init_dit). Xavier with a small-init zoo took the digits /
            MLP cell's B3 Spearman to 0.969-0.980 over three seeds (X27, X35); alone it lowered B2 on
            every other matrix cell (X31) and made the pairs recipe worse (L35).
    """

    @register_to_config
    def __init__(
        self,
        token_dim: int,
        max_tokens: int,
        num_layers_ids: int,
        width: int = 32,
        depth: int = 1,
        heads: int = 2,
        conditions: dict | None = None,
        context_dim: int = 0,
        mlp_ratio: float = 4.0,
        position_embedding: bool = True,
        num_frequencies: int = 8,
        global_rank: int = 0,
        global_budget: int | None = None,
        context_skip: bool = False,
        log_conditions: list[str] | None = None,
        self_condition: bool = False,
        condition_init: str = "dit",
    ):
        super().__init__()
        if width % heads:
            raise ConfigError("denoiser.heads", f"width {width} is not divisible by {heads} heads")
        if global_rank < 0:
            raise ConfigError("denoiser.global_rank", f"must be >= 0, got {global_rank}")
        if global_budget is not None and (
            isinstance(global_budget, bool) or not isinstance(global_budget, int) or global_budget < 1
        ):
            raise ConfigError(
                "denoiser.global_budget",
                f"must be a positive number of parameters or null, got {global_budget!r}",
            )
        check_choice(condition_init, CONDITION_INITS, "denoiser.condition_init")
        if context_skip and context_dim != token_dim:
            raise ConfigError(
                "denoiser.context_skip", f"needs context_dim == token_dim, got {context_dim} and {token_dim}"
            )
        # Built in this order: seeded inits draw from the RNG module by module.
        self.x_embed = nn.Linear(token_dim, width)
        self.context_embed = nn.Linear(context_dim, width) if context_dim else None
        self.pos_embed = nn.Embedding(max_tokens, width) if position_embedding else None
        self.layer_embed = nn.Embedding(num_layers_ids + 1, width)  # the last row: padding (id -1)
        self.t_embedder = TimestepEmbedder(width)
        self.cond_embedders = condition_embedders(
            conditions, width, num_frequencies, "denoiser", log=log_conditions or ()
        )
        self.blocks = nn.ModuleList(DiTBlock(width, heads, mlp_ratio) for _ in range(depth))
        self.final_layer = FinalLayer(width, token_dim)
        # A condition-gated skip from the input, out = F(x) + g(c) * x (EDM's c_skip in spirit):
        # epsilon / v prediction must hand the noise in x_t through, which a per-token bottleneck of
        # `width` < token_dim channels cannot do; g(c) depends on the timestep, so it can.
        self.skip = nn.Linear(width, token_dim)
        rank = self.global_rank_used = global_path_rank(global_rank, global_budget, max_tokens * token_dim)
        self.global_path = GlobalPath(max_tokens * token_dim, rank, width) if rank else None
        self.context_out = self.self_embed = None
        self.initialize_weights()
        if context_skip:  # built after the random inits, so every other weight draws as without it
            self.context_out = nn.Linear(width, token_dim)
            nn.init.zeros_(self.context_out.weight)
            nn.init.zeros_(self.context_out.bias)
        if self_condition:  # likewise, and at zero: a new model ignores the estimate
            self.self_embed = nn.Linear(token_dim, width)
            nn.init.zeros_(self.self_embed.weight)
            nn.init.zeros_(self.self_embed.bias)

    def initialize_weights(self) -> None:
        """DiT's init (init_dit, zero_dit); the skip and the global path's up-projection at zero, so
        a new model's output is zero."""
        init_dit(self, (self.pos_embed, self.layer_embed), self.cond_embedders, self.config.condition_init)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        zero_dit(self.blocks, self.final_layer)
        nn.init.zeros_(self.skip.weight)
        nn.init.zeros_(self.skip.bias)
        if self.global_path is not None:
            self.global_path.reset_parameters()
        if self.context_out is not None:
            nn.init.zeros_(self.context_out.weight)
            nn.init.zeros_(self.context_out.bias)
        if self.self_embed is not None:
            nn.init.zeros_(self.self_embed.weight)
            nn.init.zeros_(self.self_embed.bias)

    def embed_conditions(
        self, cond: dict[str, torch.Tensor], batch: int, drop: torch.Tensor | dict | None
    ) -> torch.Tensor:
        """(B, W): the sum of every condition's embedding (see `embed_conditions`)."""
        device = self.layer_embed.weight.device
        return embed_conditions(self.cond_embedders, self.config.width, cond, batch, drop, device)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        cond: dict[str, torch.Tensor] | None,
        layer_ids: torch.Tensor,
        token_valid: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        drop: torch.Tensor | dict | None = None,
        estimate: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict (B, T, token_dim) from noisy tokens.

        Args:
            x: (B, T, token_dim) noisy tokens.
            timesteps: (B,) long diffusion steps (a scalar applies to the batch).
            cond: name -> (B,) condition values; missing names get their null embedding.
            layer_ids: (B, T) long segment index of each token, -1 on padding.
            token_valid: (B, T) bool, False on padding tokens (None: all real).
            context: (B, T, context_dim) per-token context, or None.
            drop: classifier-free guidance: (B,) bool, or name -> (B,) bool, replacing conditions
                by their null embedding.
            estimate: (B, T, token_dim) a previous estimate of the clean tokens (self_condition;
                None reads as zeros, "no estimate yet"); ignored by a model without self_condition.
        """
        b, t = x.shape[:2]
        cfg = self.config
        if x.shape[-1] != cfg.token_dim:
            raise ValueError(f"x has {x.shape[-1]} channels, the denoiser expects {cfg.token_dim}")
        if t > cfg.max_tokens:
            raise ValueError(f"{t} tokens, the denoiser was built for at most {cfg.max_tokens}")
        layer_ids = torch.where(layer_ids < 0, cfg.num_layers_ids, layer_ids)  # padding row
        h = self.layer_embed(layer_ids) + self.x_embed(x)  # (B, T, W)
        if self.pos_embed is not None:
            h = h + self.pos_embed.weight[:t]
        if self.context_embed is not None and context is not None:
            h = h + self.context_embed(context)  # G.pt: the starting checkpoint beside the noisy one
        if self.self_embed is not None:  # self-conditioning: the last x0 estimate (None: zeros)
            h = h + (self.self_embed.bias if estimate is None else self.self_embed(estimate))
        c = self.embed_conditions(cond or {}, b, drop)  # (B, W)
        c = c + self.t_embedder(torch.as_tensor(timesteps, device=h.device).reshape(-1).expand(b))
        for block in self.blocks:
            h = block(h, c, token_valid)  # (B, T, W)
        out = self.final_layer(h, c) + self.skip(c).unsqueeze(1) * x  # (B, T, D)
        if self.global_path is not None:
            xv = x if token_valid is None else x * token_valid[..., None]
            out = out + self.global_path(xv, c)
        if self.context_out is not None and context is not None:
            out = out + self.context_out(c).unsqueeze(1) * context  # (B, T, D): the start, gated
        if token_valid is not None:
            out = out * token_valid[..., None]  # padding tokens predict exactly zero
        return out

    @classmethod
    def sized(cls, size: str, **kwargs) -> Denoiser:
        """A Denoiser of a named size in DENOISER_SIZES (other arguments as for __init__)."""
        check_choice(size, tuple(DENOISER_SIZES), "denoiser.size")
        return cls(**{**DENOISER_SIZES[size], **kwargs})
