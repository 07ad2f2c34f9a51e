"""Per-layer, per-channel normalisation statistics of token values, fitted on a zoo split.

Statistics are kept per placement (one tensor of one field, e.g. "params/layers.0.weight") and per
column of its block: for the neuron policy a column is one input of the layer (or the bias), for
layer_chunk a position within the chunk. Keying by placement rather than by token index makes them
independent of which other fields a member holds, so one fit serves dense and pruned rows alike.
Accumulation is Chan et al.'s parallel mean / M2 update in float64 (no sum-of-squares cancellation).

per="element" keeps, besides the column statistics, a mean and std for every entry of the block
(rows x width). It is meant for canonical="match": once neurons doing the same job share a token
position, each weight has a distribution of its own, and normalising by it hands the denoiser the
deviations from the aligned mean network at unit scale, so an error in a low-variance weight costs
in proportion to that weight's spread. Measured on the quickstart zoo's 51 training members (aligned):
sampling every weight independently from its own mean and std gives 0.52 test accuracy, a Gaussian
with their full covariance 0.83 (members: 0.96) - the structure a denoiser must add on top. In the
quickstart recipe (neuron tokens, the denoiser's global path of rank 256, 2000 steps) element
statistics sampled 0.82 mean test accuracy against 0.85 with column statistics, so they are an option,
not the default. A block whose row count differs from the fitted one (another width) falls back to the
column statistics.
"""

from __future__ import annotations

import torch

from mole.errors import ConfigError
from mole.tokenizer.layout import num_rows, stats_key, to_block, valid_block
from mole.tokenizer.member import MemberTensors

MIN_STD = 1e-8  # a constant column (e.g. an all-True bias mask) is centred but not scaled


class RunningStats:
    """count, mean and M2 per placement key and column (float64), grown as wider blocks appear."""

    def __init__(self, elements: bool = False):
        self.acc: dict[str, list[torch.Tensor]] = {}
        # per="element": (key, rows) -> [count, mean, M2], each (rows, width) float64 (Welford)
        self.elements = {} if elements else None

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
            if self.elements is not None:
                self._update_elements((key, block.shape[0]), block, valid)

    def _update_elements(self, key: tuple, block: torch.Tensor, valid: torch.Tensor) -> None:
        if key not in self.elements:
            self.elements[key] = [torch.zeros_like(block) for _ in range(3)]
        n, mean, m2 = self.elements[key]
        if n.shape[1] < block.shape[1]:  # a wider block of the same rows: grow the columns
            n, mean, m2 = (
                torch.cat([t, t.new_zeros(t.shape[0], block.shape[1] - t.shape[1])], 1) for t in (n, mean, m2)
            )
        pad = n.shape[1] - block.shape[1]
        block = torch.nn.functional.pad(block, (0, pad))
        v = torch.nn.functional.pad(valid, (0, pad)).double()
        n = n + v
        delta = (block - mean) * v
        mean = mean + delta / n.clamp(min=1)
        m2 = m2 + delta * (block - mean) * v
        self.elements[key] = [n, mean, m2]

    def finalize(self, per: str = "column") -> dict[str, dict[str, torch.Tensor]]:
        """{key: {"count", "mean", "std"}} (float64 vectors over the block's columns).

        Args:
            per: "column" (statistics per column), "tensor" (pooled over the whole tensor, then
                repeated over its columns; G.pt's per-layer scale) or "element" (column statistics
                plus "element_mean" / "element_std", (rows, width), for the most common row count
                of each placement; needs RunningStats(elements=True)).
        """
        if per == "element" and self.elements is None:
            raise ConfigError("stats_per", "element statistics need RunningStats(elements=True)")
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
        if per == "element":
            best: dict[str, list[torch.Tensor]] = {}
            for (key, _rows), acc in self.elements.items():  # the row count seen most often
                if key not in best or acc[0].max() > best[key][0].max():
                    best[key] = acc
            for key, (n, mean, m2) in best.items():
                std = torch.sqrt(m2 / n.clamp(min=1))
                out[key]["element_mean"] = torch.where(n > 0, mean, 0.0)
                out[key]["element_std"] = torch.where((n > 0) & (std > MIN_STD), std, 1.0)
        return out


def _grow(t: torch.Tensor, width: int) -> torch.Tensor:
    if t.numel() >= width:
        return t
    return torch.cat([t, torch.zeros(width - t.numel(), dtype=t.dtype)])


def stat_maps(stats: dict, layout: dict, prefix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """(T, D) float64 mean and std grids for a layout (padding: mean 0, std 1, so it stays zero).

    Args:
        stats: finalised statistics (RunningStats.finalize or a loaded stats file).
        layout: the member's layout.
        prefix: what its keys start with (its architecture family's, in a tokenizer of several).
    """
    mean = torch.zeros(layout["shape"], dtype=torch.float64)  # (T, D)
    std = torch.ones(layout["shape"], dtype=torch.float64)  # (T, D)
    for p in layout["placements"]:
        key = prefix + stats_key(p)
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
        m, sd = s["mean"][:w].expand(rows, w), s["std"][:w].expand(rows, w)
        if "element_mean" in s and s["element_mean"].shape[0] == rows and s["element_mean"].shape[1] >= w:
            m, sd = s["element_mean"][:, :w], s["element_std"][:, :w]
        mean[r : r + rows, c : c + w] = torch.where(valid, m, 0.0)
        std[r : r + rows, c : c + w] = torch.where(valid, sd, 1.0)
    return mean, std
