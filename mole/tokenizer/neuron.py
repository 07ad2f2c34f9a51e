"""neuron: one token per output neuron (a row of a weight matrix, an output channel of a kernel).

Token of neuron i of layer l (R = row_width, the longest fan-in over all layers + 1; fit sets it
to the widest member seen, so narrower members of the same layers, e.g. neuron_pruned, share D):
    [0, R)        params: incoming weights W_l[i] flattened (in*kh*kw for a conv), zero-padded,
                  its bias at column R-1
    [R, 2R)       mask bits of the same weights and bias                  (if "mask" is a field)
    next R        the frozen random init of the same (supermask context)  (if "init_params")
    next R        int8 codes of the weights, its channel's scale at R-1   (if "codes")
    next F        rows of this layer's per-neuron low-rank factors, e.g. U[i] of W = U V
                  (F = factor_width, fitted to the widest layer)          (if "factors")
Factors that are not per output neuron (V, CP / Tucker / TT cores over inputs and kernel modes)
get a segment of their own per tensor ("factor:<name>"), chunked into the first R columns.

Layer boundaries: tokens never cross them; the tokens of one layer form one segment (one layer
id), in layer order. A neuron's outgoing weights stay in the next layer's tokens.

Permutation symmetry: exposed, in part. Reordering the hidden neurons of layer l reorders the
tokens of layer l's segment (a permutation of whole tokens: with one shared layer embedding and no
position embedding among a layer's tokens, a transformer denoiser is equivariant to it), and also
reorders the input columns *inside* every token of layer l+1, which no token-level model sees as a
permutation. Full equivariance therefore needs a per-layer scheme on top (docs/design.md, the tokenizer); or
set `canonical=True` to sort neurons first (mole.tokenizer.canonical), removing the symmetry.
"""

from __future__ import annotations

import math

from mole.errors import ConfigError
from mole.nets import Architecture
from mole.tokenizer.base import Tokenizer
from mole.tokenizer.layout import placement
from mole.tokenizer.member import factor_axes


class NeuronTokenizer(Tokenizer):
    """One token per output neuron (see the module docstring).

    Args:
        row_width: R, columns for a neuron's weights + bias (per channel group); None: as wide as
            the member needs (fit sets it to the widest in the zoo, so all members share D).
        factor_width: columns for per-neuron factor rows; None: likewise.
        fields, canonical, stats_per: see Tokenizer.
    """

    name = "neuron"

    def __init__(self, row_width: int | None = None, factor_width: int | None = None, **options):
        if factor_width is not None and (
            isinstance(factor_width, bool) or not isinstance(factor_width, int) or factor_width < 0
        ):
            raise ConfigError(
                "tokenizer.factor_width", f"must be a non-negative integer, got {factor_width!r}"
            )
        if row_width is not None and (
            isinstance(row_width, bool) or not isinstance(row_width, int) or row_width < 2
        ):
            raise ConfigError("tokenizer.row_width", f"must be an integer >= 2, got {row_width!r}")
        super().__init__(**options)
        self.row_width, self.factor_width = row_width, factor_width
        self._widest = {"row": 0, "factor": 0}

    def policy_options(self) -> dict:
        return {"row_width": self.row_width, "factor_width": self.factor_width}

    @staticmethod
    def _factors(arch: Architecture, factor_shapes: list | None):
        """Per-neuron factors by weight [(name, dims, axis)], and the others [(name, dims)]."""
        shapes, weights = arch.param_shapes(), arch.weight_names()
        aligned: dict[str, list] = {w: [] for w in weights}
        loose = []
        for name, dims in factor_shapes or []:
            weight, out_axis, _ = factor_axes(name, weights)
            if weight is not None and out_axis is not None and dims[out_axis] == shapes[weight][0]:
                aligned[weight].append((name, dims, out_axis))
            else:
                loose.append((name, dims))
        return aligned, loose

    def _plan(
        self, arch: Architecture, channels: list[str], present: list[str], factor_shapes: list | None
    ) -> tuple[list[dict], list[dict], int]:
        shapes, weights = arch.param_shapes(), arch.weight_names()
        r = max(math.prod(shapes[w][1:]) for w in weights) + 1
        if self.row_width is not None:
            if r > self.row_width:
                raise ConfigError(
                    "tokenizer.row_width",
                    f"{self.row_width} columns, but a neuron of this member needs {r}: refit",
                )
            r = self.row_width
        aligned, loose = self._factors(arch, factor_shapes if "factors" in present else None)
        need = max(sum(math.prod(d) // d[a] for _, d, a in aligned[w]) for w in weights)
        f_width = need if self.factor_width is None else self.factor_width
        if need > f_width:
            raise ConfigError(
                "tokenizer.factor_width", f"{f_width} columns, but a layer's factor rows need {need}: refit"
            )
        col, width = {"params": 0}, r
        for f in ("mask", "init_params", "codes"):
            if f in channels:
                col[f], width = width, width + r
        if "factors" in channels:
            col["factors"], width = width, width + f_width

        segments, placements, row, owned = [], [], 0, set()
        for w in weights:
            out, prefix = shapes[w][0], w[: -len("weight")]
            bias = prefix + "bias" if prefix + "bias" in shapes else None
            owned.update({w, bias})
            segments.append({"name": prefix.rstrip("."), "start": row, "stop": row + out})
            for f in ("params", "mask", "init_params"):
                if f == "params" or f in present:
                    placements.append(placement(f, w, shapes[w], row, col[f], "rows"))
                    if bias:
                        placements.append(placement(f, bias, shapes[bias], row, col[f] + r - 1, "rows"))
            if "codes" in present:
                placements.append(placement("codes", w, shapes[w], row, col["codes"], "rows"))
                placements.append(placement("scales", w, [out], row, col["codes"] + r - 1, "rows"))
            c = col.get("factors", 0)
            for name, dims, axis in aligned[w]:
                placements.append(placement("factors", name, dims, row, c, "rows", axis=axis))
                c += placements[-1]["width"]
            row += out
        for name, shape in shapes.items():  # parameters outside any weight/bias pair (none in mlp/cnn)
            if name not in owned:
                segments.append(
                    {"name": f"param:{name}", "start": row, "stop": row + math.ceil(math.prod(shape) / r)}
                )
                for f in ("params", "mask", "init_params"):
                    if f == "params" or f in present:
                        placements.append(placement(f, name, shape, row, col[f], "chunk", width=r))
                row = segments[-1]["stop"]
        for name, dims in loose:
            segments.append(
                {"name": f"factor:{name}", "start": row, "stop": row + math.ceil(math.prod(dims) / r)}
            )
            placements.append(placement("factors", name, dims, row, 0, "chunk", width=r))
            row = segments[-1]["stop"]
        return segments, placements, width

    def _observe(self, layout: dict) -> None:
        per_layer: dict[int, int] = {}
        for p in layout["placements"]:
            if p["field"] == "params" and p["name"].endswith("weight"):
                self._widest["row"] = max(self._widest["row"], p["width"] + 1)
            if p["field"] == "factors" and p["mode"] == "rows":
                per_layer[p["row"]] = per_layer.get(p["row"], 0) + p["width"]
        self._widest["factor"] = max([self._widest["factor"], *per_layer.values()])

    def fit(self, items, max_items: int | None = None) -> NeuronTokenizer:
        self._widest = {"row": 0, "factor": 0}
        super().fit(items, max_items)
        if self.row_width is None:
            self.row_width = self._widest["row"]
        if self.factor_width is None and "factors" in (self.fields or []):
            self.factor_width = self._widest["factor"]
        self._reset_caches()  # the widths are part of every plan
        return self
