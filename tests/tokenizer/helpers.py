"""Synthetic members of every kind, hypothesis strategies over small architectures, and tiny zoos."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from hypothesis import strategies as st

from mole.nets import Architecture, build_architecture
from mole.tokenizer import MemberTensors
from mole.zoo import store
from mole.zoo.build import build_zoo
from mole.zoo.spec import ZooSpec
from tests.conftest import TINY_ZOO

KINDS = ("dense", "masked", "quantized", "lowrank", "supermask", "everything")
MLP = build_architecture("mlp", (1, 4, 4), 3, hidden=[6, 5])
CNN = build_architecture("cnn", (1, 4, 4), 3, channels=[2], hidden=[4])
CNN1D = build_architecture("cnn", (1, 8), 3, channels=[2, 3], kernel_size=3, hidden=[4])


# ---------------------------------------------------------------------------- architectures
@st.composite
def architectures(draw, kinds=("mlp", "cnn", "cnn1d")) -> Architecture:
    """A small random MLP, 2-D CNN or 1-D CNN (a few neurons per layer, inputs of a few pixels)."""
    kind = draw(st.sampled_from(kinds))
    classes = draw(st.integers(2, 4))
    if kind == "mlp":
        shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        hidden = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
        return build_architecture("mlp", shape, classes, hidden=hidden)
    channels = draw(st.lists(st.integers(1, 3), min_size=1, max_size=2))
    side = 2 ** len(channels)
    spatial = [draw(st.integers(side, side + 2)) for _ in range(1 if kind == "cnn1d" else 2)]
    shape = (draw(st.integers(1, 2)), *spatial)  # (C, L) or (C, H, W)
    hidden = draw(st.lists(st.integers(1, 4), min_size=0, max_size=2))
    return build_architecture(
        "cnn", shape, classes, channels=channels, kernel_size=draw(st.sampled_from([1, 3])), hidden=hidden
    )


# ---------------------------------------------------------------------------- members
def lowrank_factors(
    arch: Architecture, g: torch.Generator, rank: int | None = None
) -> dict[str, torch.Tensor]:
    """Factors named and shaped as mole.zoo.lowrank makes them: U, V for linear; cp / tucker / tt for
    convs. Ranks are random per layer, or min(rank, layer limit) when `rank` is given."""
    out = {}
    for i, name in enumerate(arch.weight_names()):
        shape = arch.param_shapes()[name]
        limit = min(shape[:2])
        r = min(rank, limit) if rank else int(torch.randint(1, limit + 1, (1,), generator=g))
        if len(shape) == 2:
            out[f"{name}.U"], out[f"{name}.V"] = (
                torch.randn(shape[0], r, generator=g),
                torch.randn(r, shape[1], generator=g),
            )
        elif i % 3 == 0:  # cp
            for m, n in enumerate(shape):
                out[f"{name}.cp{m}"] = torch.randn(n, r, generator=g)
        elif i % 3 == 1:  # tucker
            ranks = (min(r, shape[0]), min(r, shape[1]), *shape[2:])
            out[f"{name}.core"] = torch.randn(*ranks, generator=g)
            for m, (n, k) in enumerate(zip(shape, ranks)):
                out[f"{name}.tk{m}"] = torch.randn(n, k, generator=g)
        else:  # tensor train
            bonds = [1, *[r] * (len(shape) - 1), 1]
            for m, n in enumerate(shape):
                out[f"{name}.tt{m}"] = torch.randn(bonds[m], n, bonds[m + 1], generator=g)
    return out


def reconstruct(factors: dict[str, torch.Tensor], weight: str) -> torch.Tensor:
    """The weight a factor set stands for (mirrors mole.zoo.lowrank.reconstruct, one member; 2-D
    weights, 1-D kernels (O, C, k) and 2-D kernels (O, C, kh, kw))."""
    f = {k.rsplit(".", 1)[1]: v.double() for k, v in factors.items() if k.rsplit(".", 1)[0] == weight}
    if "U" in f:
        return (f["U"] @ f["V"]).float()
    kind = "cp" if "cp0" in f else "tk" if "core" in f else "tt"
    n = sum(k.startswith(kind) for k in f)  # modes
    modes, ranks, bonds = "abcd"[:n], "pqrs"[:n], ["x", *"pqr"[: n - 1], "y"]
    if kind == "cp":
        spec = ",".join(f"{m}r" for m in modes)
    elif kind == "tk":
        spec = f"{ranks}," + ",".join(f"{m}{r}" for m, r in zip(modes, ranks))
    else:
        spec = ",".join(f"{bonds[i]}{m}{bonds[i + 1]}" for i, m in enumerate(modes))
    core = [f["core"]] if kind == "tk" else []
    return torch.einsum(f"{spec}->{modes}", *core, *[f[f"{kind}{i}"] for i in range(n)]).float()


def random_member(arch: Architecture, kind: str, seed: int = 0, rank: int | None = None) -> MemberTensors:
    """A member of `kind` with random tensors, consistent the way the zoo's variants make them
    (masked params are zero where the mask is, quantized weights are code * scale, ...)."""
    g = torch.Generator().manual_seed(seed)
    shapes, weights = arch.param_shapes(), arch.weight_names()
    params = {n: torch.randn(s, generator=g) for n, s in shapes.items()}
    first = weights[0]
    params[first].view(-1)[0] = -0.0  # bitwise: the sign of zero must survive
    m = MemberTensors(arch.name, arch.config(), params)
    if kind in ("masked", "supermask", "everything"):
        m.mask = {
            n: (torch.rand(s, generator=g) < 0.5) if n in weights else torch.ones(s, dtype=torch.bool)
            for n, s in shapes.items()
        }
    if kind in ("supermask", "everything"):
        m.init_params = {
            n: torch.randn(s, generator=g) if n in weights else torch.zeros(s) for n, s in shapes.items()
        }
        m.params = {n: m.init_params[n] * m.mask[n] for n in shapes}
    elif kind == "masked":
        m.params = {n: params[n] * m.mask[n] for n in shapes}
    if kind in ("quantized", "everything"):
        m.codes = {n: torch.randint(-7, 8, shapes[n], generator=g, dtype=torch.int8) for n in weights}
        m.scales = {n: torch.rand(shapes[n][0], generator=g) + 0.01 for n in weights}
        if kind == "quantized":
            for n in weights:
                m.params[n] = m.codes[n].float() * m.scales[n].reshape(-1, *[1] * (len(shapes[n]) - 1))
    if kind in ("lowrank", "everything"):
        m.factors = lowrank_factors(arch, g, rank)
        if kind == "lowrank":
            for n in weights:
                m.params[n] = reconstruct(m.factors, n)
    return m.validate()


# ---------------------------------------------------------------------------- zoos
@functools.lru_cache(maxsize=1)
def _tiny(root: str) -> Path:
    out = Path(root) / "tiny"
    build_zoo(ZooSpec.from_dict(TINY_ZOO), out, progress=False)
    return out


def tiny_zoo(tmp_path_factory) -> Path:
    """TINY_ZOO built once per test session (shared by the tokenizer and data module tests)."""
    return _tiny(str(tmp_path_factory.getbasetemp() / "tokenizer-tiny-zoo"))


def variant_zoo(base: Path, out: Path) -> Path:
    """A zoo with TINY_ZOO's dense rows plus, per member, magnitude / quantized / lowrank / supermask /
    neuron_pruned (narrower) rows derived from it (same member_index, another member_id), written
    through mole.zoo.store."""
    records = store.read_zoo(base).to_pylist()
    extra = []
    for r in records:
        if not r["final"]:
            continue
        member = MemberTensors.from_row(r)
        narrow = build_architecture("mlp", member.arch.input_shape, member.arch.num_classes, hidden=[12])
        for j, kind in enumerate(("masked", "quantized", "lowrank", "supermask", "narrower")):
            arch = narrow if kind == "narrower" else member.arch  # neuron_pruned: fewer hidden neurons
            synth = random_member(
                arch, "dense" if kind == "narrower" else kind, seed=1000 * r["member_index"] + j, rank=2
            )
            row = synth.to_row()
            new = {
                **r,
                **{k: row[k] for k in ("params", "mask", "init_params", "codes", "scales", "factors")},
            }
            new["member_id"] = f"{r['member_id']}-{kind}"
            new["arch_options"] = row["arch_options"]
            new["variant"] = {"masked": "magnitude", "narrower": "neuron_pruned"}.get(kind, kind)
            new["variant_config"] = json.dumps({"kind": kind})
            new["sparsity"] = 0.5 if kind in ("masked", "supermask") else 0.0
            new["bits"] = 4 if kind == "quantized" else None
            new["rank"] = 2 if kind == "lowrank" else None
            new["extra"] = json.dumps({"factor_shapes": row["factor_shapes"]}) if kind == "lowrank" else None
            extra.append(new)
    by_shard: dict[int, list] = {}
    for r in records + extra:
        by_shard.setdefault(r["member_index"] % 2, []).append(r)
    for shard, recs in sorted(by_shard.items()):
        entry = store.write_shard(out / "shards" / store.shard_name(shard), recs)
        store.record_shard(out, shard, entry, "synthetic", len(by_shard))
    return out
