"""Layouts: where every tensor of a member sits in the (T, D) token grid, as plain JSON.

A layout is a dict:
    tokenizer, options          the policy and the options it was made with (for messages; a reading
                                tokenizer re-plans and requires the same shape, segments, placements)
    architecture, arch_config   the member's architecture (Architecture.config())
    present                     optional fields the member holds ("mask", "init_params", "codes", "factors")
    factor_shapes               [[name, dims], ...] or None
    shape                       [T, D]
    segments                    [{"name", "start", "stop"}]: token rows of one layer id each, in order
    placements                  [{"field", "name", "shape", "row", "col", "width", "mode", "axis"}]
    perm                        canonical-order permutations applied before encoding, or None

A placement writes one tensor into a block of the grid. mode "rows": the tensor's `axis` becomes the
token axis (one token per entry of that axis, e.g. one per output neuron), the rest is flattened into
`width` columns. mode "chunk": the flat tensor is cut row-major into ceil(numel / width) tokens, the
last one zero-padded. Everything outside a placement is zero. Writing and reading are pure copies, so
floats pass through bit for bit; masks read back as `> 0.5` and codes as rounded int8, which is exact
for tokenized members and a projection onto the grid for generated ones.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch

from mole.errors import ConfigError
from mole.tokenizer.member import DTYPES, MemberTensors, arch_info

TOKEN_DTYPE = torch.float32


def placement(
    field: str, name: str, shape, row: int, col: int, mode: str, width: int | None = None, axis: int = 0
) -> dict:
    """One placement; for mode "rows" the width is implied by the shape and axis."""
    shape = [int(s) for s in shape]
    if mode == "rows":
        width = math.prod(shape) // shape[axis]
    return {
        "field": field,
        "name": name,
        "shape": shape,
        "row": int(row),
        "col": int(col),
        "width": int(width),
        "mode": mode,
        "axis": int(axis),
    }


def num_rows(p: dict) -> int:
    """Tokens a placement spans."""
    if p["mode"] == "rows":
        return p["shape"][p["axis"]]
    return math.ceil(math.prod(p["shape"]) / p["width"])


def to_block(t: torch.Tensor, p: dict) -> torch.Tensor:
    """A tensor as its (rows, width) block (chunk mode: zero-padded)."""
    if p["mode"] == "rows":
        return t.movedim(p["axis"], 0).reshape(num_rows(p), p["width"])  # (n, width)
    flat = t.reshape(-1)
    block = torch.zeros(num_rows(p) * p["width"], dtype=t.dtype)
    block[: flat.numel()] = flat
    return block.view(num_rows(p), p["width"])  # (ceil(numel / width), width)


def valid_block(p: dict) -> torch.Tensor:
    """(rows, width) bool: which entries of a placement's block hold values (not padding)."""
    n, w = num_rows(p), p["width"]
    valid = torch.zeros(n * w, dtype=torch.bool)
    valid[: math.prod(p["shape"])] = True
    return valid.view(n, w)


@dataclass(frozen=True)
class Compiled:
    """A layout turned into one flat index: entry k of the concatenated member values (placements
    in order, each tensor in its natural C order) lives at position index[k] of the flat (T * D) grid."""

    index: torch.Tensor  # (N,) long
    sizes: list[int]  # values per placement
    valid: torch.Tensor  # (T, D) bool
    layer_ids: torch.Tensor  # (T,) long


def grid_positions(p: dict, d: int) -> torch.Tensor:
    """(numel,) flat grid positions of a placement's values, in the tensor's natural order."""
    n, w, r, c = math.prod(p["shape"]), p["width"], p["row"], p["col"]
    if p["mode"] == "chunk":
        f = torch.arange(n)
        return (r + f // w) * d + c + f % w
    rows = num_rows(p)
    natural = torch.arange(n).reshape(p["shape"]).movedim(p["axis"], 0).reshape(rows, w)  # value at (j, k)
    pos = torch.empty(n, dtype=torch.long)
    pos[natural.reshape(-1)] = ((r + torch.arange(rows))[:, None] * d + c + torch.arange(w)).reshape(-1)
    return pos


def compile_layout(layout: dict) -> Compiled:
    t, d = layout["shape"]
    parts = [grid_positions(p, d) for p in layout["placements"]]
    index = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
    valid = torch.zeros(t * d, dtype=torch.bool)
    valid[index] = True
    return Compiled(index, [len(x) for x in parts], valid.view(t, d), layer_ids(layout))


def encode(member: MemberTensors, layout: dict, compiled: Compiled | None = None) -> torch.Tensor:
    """Write a member's tensors into a zero (T, D) grid following the layout's placements."""
    compiled = compiled or compile_layout(layout)
    values = [
        getattr(member, p["field"])[p["name"]].reshape(-1).to(TOKEN_DTYPE) for p in layout["placements"]
    ]
    tokens = torch.zeros(math.prod(layout["shape"]), dtype=TOKEN_DTYPE)  # (T * D,)
    tokens[compiled.index] = torch.cat(values)  # exact: a copy (bool / int8 -> float32 are exact too)
    return tokens.view(layout["shape"])  # (T, D)


def decode(tokens: torch.Tensor, layout: dict, compiled: Compiled | None = None) -> MemberTensors:
    """Read a member back from (T, D) tokens: floats as float32, masks > 0.5, codes rounded to int8."""
    fields = decode_fields(tokens, layout, compiled)
    return MemberTensors(
        architecture=layout["architecture"],
        arch_config=layout["arch_config"],
        **{f: None if t is None else {n: _cast(v, f) for n, v in t.items()} for f, t in fields.items()},
    )


def decode_fields(
    tokens: torch.Tensor, layout: dict, compiled: Compiled | None = None
) -> dict[str, dict[str, torch.Tensor] | None]:
    """Every field of a member as the tokens hold it, before any cast: field -> {name: float32 tensor}
    in storage order (None: the field is absent). A generated mask channel read this way is a score
    per weight (higher: kept), generated codes are values to snap onto a grid."""
    compiled = compiled or compile_layout(layout)
    values = tokens.reshape(-1).index_select(0, compiled.index).split(compiled.sizes)  # fresh memory
    fields: dict[str, dict] = {"params": {}}
    for f in layout["present"]:
        fields[f] = {}
    if "codes" in layout["present"]:
        fields["scales"] = {}
    for p, v in zip(layout["placements"], values):
        fields[p["field"]][p["name"]] = v.reshape(p["shape"]).to(TOKEN_DTYPE)
    # Placements follow token order; the member keeps storage order (param_shapes, factor_shapes).
    info = arch_info(layout["architecture"], json.dumps(layout["arch_config"], sort_keys=True))
    order = {f: list(info.shapes) for f in ("params", "mask", "init_params")}
    order.update(codes=info.weights, scales=info.weights)
    order["factors"] = [n for n, _ in layout["factor_shapes"] or []]
    for f, tensors in fields.items():
        missing = [n for n in order[f] if n not in tensors]
        if missing:
            raise ConfigError("layout", f"places no {f} for {missing}")
        fields[f] = {n: tensors[n] for n in order[f]}
    return {f: fields.get(f) for f in ("params", "mask", "init_params", "codes", "scales", "factors")}


def _cast(t: torch.Tensor, field: str) -> torch.Tensor:
    dtype = DTYPES[field]
    if dtype == torch.bool:
        return t > 0.5
    if dtype == torch.int8:
        return torch.round(t).clamp(-128, 127).to(torch.int8)
    return t.to(dtype)


def valid_mask(layout: dict) -> torch.Tensor:
    """(T, D) bool: entries that hold a value of the member (False on padding and absent fields)."""
    return compile_layout(layout).valid


def layer_ids(layout: dict) -> torch.Tensor:
    """(T,) long: the segment (layer) index of every token, for the denoiser's layer embedding."""
    ids = torch.empty(layout["shape"][0], dtype=torch.long)
    for i, s in enumerate(layout["segments"]):
        ids[s["start"] : s["stop"]] = i
    return ids


def stats_key(p: dict) -> str:
    """The key under which a placement's normalisation statistics are stored."""
    return f"{p['field']}/{p['name']}"
