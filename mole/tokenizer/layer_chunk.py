"""layer_chunk: G.pt's chunk_within_layer. Each tensor's flat values cut into fixed-size chunks.

Layer boundaries: tokens never cross them. Every parameter tensor (weight and bias separately, as in
G.pt's parameter_sizes) is flattened in storage order and cut into ceil(numel / chunk_size) tokens,
the last one zero-padded; each tensor is its own segment, so each token has one layer id.

Channels: a token is D = chunk_size * (1 + one per extra field) wide. Columns [0, c) hold the
parameter values; the mask bits, the frozen init (supermask / rewind context) and the int8 codes of
the *same* elements sit in further c-wide channel groups, aligned position by position (bias chunks
have no codes). Per-channel quantization scales get their own segment per weight tensor
("scales:<weight>") whenever the codes channel exists, and every low-rank factor tensor one
("factor:<name>"), both chunked in the parameter columns.

Permutation symmetry: none is exposed. A chunk mixes several neurons (and a neuron can straddle
chunks), so permuting hidden neurons changes the tokens in a way a denoiser cannot see as a
permutation; with `canonical=True` members are first put in canonical neuron order
(mole.tokenizer.canonical), which removes the symmetry from the data instead.
"""

from __future__ import annotations

import math

from mole.errors import check_int
from mole.nets import Architecture
from mole.tokenizer.base import Tokenizer
from mole.tokenizer.layout import placement

ALIGNED = ("mask", "init_params", "codes")  # fields stored element by element beside the params


class LayerChunkTokenizer(Tokenizer):
    """Fixed-size chunks within each tensor (see the module docstring).

    Args:
        chunk_size: values per token and channel group (G.pt's max_chunk_size).
        fields, canonical, stats_per: see Tokenizer.
    """

    name = "layer_chunk"

    def __init__(self, chunk_size: int = 64, **options):
        check_int(chunk_size, "tokenizer.chunk_size")
        super().__init__(**options)
        self.chunk_size = chunk_size

    def policy_options(self) -> dict:
        return {"chunk_size": self.chunk_size}

    def _plan(
        self, arch: Architecture, channels: list[str], present: list[str], factor_shapes: list | None
    ) -> tuple[list[dict], list[dict], int]:
        c = self.chunk_size
        shapes = arch.param_shapes()
        weights = set(arch.weight_names())
        col, width = {"params": 0}, c
        for f in ALIGNED:
            if f in channels:
                col[f], width = width, width + c
        segments, placements, row = [], [], 0

        def segment(name: str, numel: int) -> int:
            nonlocal row
            start, row = row, row + math.ceil(numel / c)
            segments.append({"name": name, "start": start, "stop": row})
            return start

        for name, shape in shapes.items():
            start = segment(name, math.prod(shape))
            for f in ("params", *ALIGNED):
                if (f == "params" or f in present) and (f != "codes" or name in weights):
                    placements.append(placement(f, name, shape, start, col[f], "chunk", width=c))
        if "codes" in channels:  # scale tokens exist whenever codes do, so T does not depend on the row
            for name in arch.weight_names():
                start = segment(f"scales:{name}", shapes[name][0])
                if "codes" in present:
                    placements.append(placement("scales", name, shapes[name][:1], start, 0, "chunk", width=c))
        if "factors" in present:
            for name, dims in factor_shapes:
                start = segment(f"factor:{name}", math.prod(dims))
                placements.append(placement("factors", name, dims, start, 0, "chunk", width=c))
        return segments, placements, width
