"""Per-layer, per-channel normalisation statistics of token values, fitted on a zoo split.

Statistics are kept per placement (one tensor of one field, e.g. "params/layers.0.weight") and per
column of its block: for the neuron policy a column is one input of the layer (or the bias), for
layer_chunk a position within the chunk. Keying by placement rather than by token index makes them
independent of which other fields a member holds, so one fit serves dense and pruned rows alike.
Accumulation is Chan et al.'s parallel mean / M2 update in float64 (no sum-of-squares cancellation).
"""

from __future__ import annotations

import torch

from mole.errors import ConfigError
from mole.tokenizer.layout import num_rows, stats_key, to_block, valid_block
from mole.tokenizer.member import MemberTensors

MIN_STD = 1e-8  # a constant column (e.g. an all-True bias mask) is centred but not scaled


class RunningStats:
    """count, mean and M2 per placement key and column (float64), grown as wider blocks appear."""

    def __init__(self):
        self.acc: dict[str, list[torch.Tensor]] = {}

    def update(self, member: MemberTensors, placements: list[dict]) -> None:
        """Add one member's values.

        Args:
            member: the member (already canonicalised if the tokenizer does so).
            placements: its layout's placements.
        """
        for p in placements:
            block = to_block(getattr(member, p["field"])[p["name"]], p).double()  # (rows, width)
            valid = valid_block(p)
            n_b = valid.sum(0).double()  # (width,)
            sum_b = torch.where(valid, block, 0.0).sum(0)
            mean_b = sum_b / n_b.clamp(min=1)
            m2_b = torch.where(valid, (block - mean_b) ** 2, 0.0).sum(0)
            key = stats_key(p)
            if key not in self.acc:
                self.acc[key] = [torch.zeros(0, dtype=torch.float64) for _ in range(3)]
            n_a, mean_a, m2_a = (_grow(t, p["width"]) for t in self.acc[key])
            n_b, mean_b, m2_b = (_grow(t, n_a.numel()) for t in (n_b, mean_b, m2_b))
            n = n_a + n_b
            delta = mean_b - mean_a
            frac = torch.where(n > 0, n_b / n.clamp(min=1), 0.0)
            mean = mean_a + delta * frac
            m2 = m2_a + m2_b + delta**2 * n_a * frac
            self.acc[key] = [n, mean, m2]

    def finalize(self, per: str = "column") -> dict[str, dict[str, torch.Tensor]]:
        """{key: {"count", "mean", "std"}} (float64 vectors over the block's columns).

        Args:
            per: "column" (statistics per column) or "tensor" (pooled over the whole tensor, then
                repeated over its columns; G.pt's per-layer scale).
        """
        out = {}
        for key, (n, mean, m2) in self.acc.items():
            if per == "tensor":
                total = n.sum()
                pooled = (n * mean).sum() / total.clamp(min=1)
                m2 = (m2 + n * (mean - pooled) ** 2).sum().expand_as(n)
                mean = torch.where(n > 0, pooled, 0.0)
                n = total.expand_as(n).clone()
            std = torch.sqrt(m2 / n.clamp(min=1))
            mean = torch.where(n > 0, mean, 0.0)
            std = torch.where((n > 0) & (std > MIN_STD), std, 1.0)
            out[key] = {"count": n.clone(), "mean": mean.clone(), "std": std.clone()}
        return out


def _grow(t: torch.Tensor, width: int) -> torch.Tensor:
    if t.numel() >= width:
        return t
    return torch.cat([t, torch.zeros(width - t.numel(), dtype=t.dtype)])


def stat_maps(stats: dict, layout: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, D) float64 mean and std grids for a layout (padding: mean 0, std 1, so it stays zero).

    Args:
        stats: finalised statistics (RunningStats.finalize or a loaded stats file).
        layout: the member's layout.
    """
    mean = torch.zeros(layout["shape"], dtype=torch.float64)  # (T, D)
    std = torch.ones(layout["shape"], dtype=torch.float64)  # (T, D)
    for p in layout["placements"]:
        key = stats_key(p)
        if key not in stats:
            raise ConfigError(
                "layout", f"the tokenizer's statistics have no entry {key!r}: it was fitted on another zoo"
            )
        s = stats[key]
        if s["mean"].numel() < p["width"]:
            raise ConfigError(
                "layout",
                f"{key} is {p['width']} wide, the statistics were fitted on at most {s['mean'].numel()}",
            )
        r, c, w = p["row"], p["col"], p["width"]
        valid = valid_block(p)
        rows = num_rows(p)
        mean[r : r + rows, c : c + w] = torch.where(valid, s["mean"][:w].expand(rows, w), 0.0)
        std[r : r + rows, c : c + w] = torch.where(valid, s["std"][:w].expand(rows, w), 1.0)
    return mean, std
