"""MemberTensors: one zoo member's tensors by name (params, mask, init, codes + scales, factors).

This is the tokenizers' unit of work. It follows the variant column contract of mole.zoo.store:
`params` are the effective parameters; `mask` and `init_params` cover every parameter; `codes` cover
only the weight tensors (Architecture.weight_names() order) and `scales` hold one value per output
channel of each of them; `factors` are named tensors whose names and shapes come from
extra["factor_shapes"]. `from_row` / `to_row` convert to and from a zoo row, bit for bit.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mole.errors import ConfigError
from mole.nets import Architecture, architecture_from_config

OPTIONAL_FIELDS = ("mask", "init_params", "codes", "factors")  # codes imply scales
DTYPES = {
    "params": torch.float32,
    "mask": torch.bool,
    "init_params": torch.float32,
    "codes": torch.int8,
    "scales": torch.float32,
    "factors": torch.float32,
}
# Which axis of a low-rank factor runs over its layer's output neurons and which over its input
# neurons, by the factor's suffix (names follow mole.zoo.lowrank: `<weight name>.<factor>`).
# A factor not listed is still stored exactly, but is never treated as per-neuron, and canonical
# ordering refuses to permute a member holding one.
FACTOR_AXES: dict[str, tuple[int | None, int | None]] = {
    "U": (0, None),  # (out, r)
    "V": (None, 1),  # (r, in)
    "cp0": (0, None),  # (O, r)
    "cp1": (None, 0),  # (C, r)
    "tk0": (0, None),  # (O, r0)
    "tk1": (None, 0),  # (C, r1)
    "tt0": (1, None),  # (1, O, r1)
    "tt1": (None, 1),  # (r1, C, r2)
    # factors over the kernel's spatial modes or bonds only: never indexed by neurons
    **{k: (None, None) for k in ("core", "cp2", "cp3", "tk2", "tk3", "tt2", "tt3")},
}


@dataclass(frozen=True)
class ArchInfo:
    """An architecture with its canonical config JSON and shapes, computed once per process."""

    arch: Architecture
    key: str  # json.dumps(config, sort_keys=True)
    shapes: dict[str, tuple[int, ...]]  # read-only
    weights: list[str]  # read-only


@functools.lru_cache(maxsize=64)
def arch_info(name: str, config_json: str) -> ArchInfo:
    """ArchInfo of (name, JSON config); every zoo row repeats its config, so this is a cache hit."""
    key = json.dumps(json.loads(config_json), sort_keys=True)
    if key != config_json:
        return arch_info(name, key)  # one instance per canonical config
    arch = architecture_from_config(name, json.loads(key))
    return ArchInfo(arch, key, arch.param_shapes(), arch.weight_names())


def factor_axes(factor: str, weight_names: list[str]) -> tuple[str | None, int | None, int | None]:
    """(owning weight, out axis, in axis) of a factor name; (None, None, None) when unknown."""
    weight, _, suffix = factor.rpartition(".")
    if weight in weight_names and suffix in FACTOR_AXES:
        return (weight, *FACTOR_AXES[suffix])
    return None, None, None


@dataclass
class MemberTensors:
    """One member's tensors, unstacked, keyed by parameter (or factor) name.

    Args:
        architecture: ARCHITECTURES name, e.g. "mlp".
        arch_config: Architecture.config() (input shape, classes and options).
        params: effective parameters, param_shapes() order, float32.
        mask: bool over every parameter, or None.
        init_params: float32 over every parameter (supermask init / rewind point), or None.
        codes: int8 per weight tensor (weight_names() order, weight shapes), or None.
        scales: float32 (out,) per weight tensor, present exactly when codes are.
        factors: float32 low-rank factors in storage order (insertion order is kept), or None.
    """

    architecture: str
    arch_config: dict
    params: dict[str, torch.Tensor]
    mask: dict[str, torch.Tensor] | None = None
    init_params: dict[str, torch.Tensor] | None = None
    codes: dict[str, torch.Tensor] | None = None
    scales: dict[str, torch.Tensor] | None = None
    factors: dict[str, torch.Tensor] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, not tokenized

    # ------------------------------------------------------------------ structure
    @property
    def info(self) -> ArchInfo:
        info = self.__dict__.get("_info")
        if info is None or info.arch.name != self.architecture:
            info = self.__dict__["_info"] = arch_info(
                self.architecture, json.dumps(self.arch_config, sort_keys=True)
            )
        return info

    @property
    def arch(self) -> Architecture:
        return self.info.arch

    def signature(self) -> str:
        """'mlp {"hidden": [32, 32], ...}': names the architecture in error messages."""
        return architecture_signature(self.architecture, self.arch_config)

    def present(self) -> list[str]:
        """The optional fields this member holds, in OPTIONAL_FIELDS order."""
        return [f for f in OPTIONAL_FIELDS if getattr(self, f) is not None]

    def factor_shapes(self) -> list[list]:
        """[[name, [dims...]], ...] in storage order (the extra["factor_shapes"] format)."""
        return [[n, list(t.shape)] for n, t in (self.factors or {}).items()]

    def expected_shapes(self, name: str) -> dict[str, tuple[int, ...]]:
        """Name -> shape each tensor of field `name` must have (factors: as they are)."""
        shapes, weights = self.info.shapes, self.info.weights
        if name in ("params", "mask", "init_params"):
            return shapes
        if name == "codes":
            return {n: shapes[n] for n in weights}
        if name == "scales":
            return {n: shapes[n][:1] for n in weights}
        return {n: tuple(t.shape) for n, t in (self.factors or {}).items()}

    def validate(self) -> MemberTensors:
        """Check names, shapes and dtypes against the architecture; ConfigError naming the field."""
        if (self.codes is None) != (self.scales is None):
            raise ConfigError("codes", "codes and scales come together (one is missing)")
        for name in ("params", "mask", "init_params", "codes", "scales", "factors"):
            tensors = getattr(self, name)
            if tensors is None:
                if name == "params":
                    raise ConfigError("params", "missing")
                continue
            expected = self.expected_shapes(name)
            if list(tensors) != list(expected):
                raise ConfigError(name, f"names {list(tensors)} do not match {list(expected)}")
            for n, t in tensors.items():
                if tuple(t.shape) != tuple(expected[n]) or t.dtype != DTYPES[name]:
                    raise ConfigError(
                        f"{name}.{n}",
                        f"expected {DTYPES[name]} {tuple(expected[n])} for {self.signature()}, "
                        f"got {t.dtype} {tuple(t.shape)}",
                    )
        return self

    def equal(self, other: MemberTensors) -> bool:
        """Bitwise equality of every tensor (so -0.0 != 0.0 and NaN == the same NaN), and of structure."""
        if (self.architecture, self.arch_config) != (other.architecture, other.arch_config):
            return False
        for name in ("params", "mask", "init_params", "codes", "scales", "factors"):
            a, b = getattr(self, name), getattr(other, name)
            if (a is None) != (b is None):
                return False
            if a is None:
                continue
            if list(a) != list(b):
                return False
            for n in a:
                if a[n].dtype != b[n].dtype or a[n].shape != b[n].shape:
                    return False
                if not torch.equal(_bits(a[n]), _bits(b[n])):
                    return False
        return True

    # ------------------------------------------------------------------ zoo rows
    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> MemberTensors:
        """Build from a zoo row (a dict of columns; tensor columns as lists, numpy arrays or None).

        Args:
            row: needs architecture, arch_options, params; mask, init_params, codes, scales, factors
                and extra (JSON with "factor_shapes" when factors are present) are optional.
        """
        name, config = row["architecture"], row["arch_options"]
        info = arch_info(name, config if isinstance(config, str) else json.dumps(config, sort_keys=True))
        config = json.loads(info.key)  # a fresh dict per member
        shapes, weights = info.shapes, info.weights
        extra = row.get("extra")
        extra = json.loads(extra) if isinstance(extra, str) and extra else dict(extra or {})

        def take(column: str, layout: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor] | None:
            value = row.get(column)
            if value is None:
                return None
            flat = torch.from_numpy(np.asarray(value, dtype=_np_dtype(column)).ravel().copy())
            total = sum(math.prod(s) for s in layout.values())
            if flat.numel() != total:
                raise ConfigError(column, f"holds {flat.numel()} values, {name} {config} needs {total}")
            out, i = {}, 0
            for n, s in layout.items():
                k = math.prod(s)
                out[n] = flat[i : i + k].reshape(s)
                i += k
            return out

        factor_layout = None
        if row.get("factors") is not None:
            if "factor_shapes" not in extra:
                raise ConfigError("extra.factor_shapes", "missing, though the row has factors")
            factor_layout = {n: tuple(int(d) for d in dims) for n, dims in extra["factor_shapes"]}
        member = cls(
            architecture=name,
            arch_config=config,
            params=take("params", shapes),
            mask=take("mask", shapes),
            init_params=take("init_params", shapes),
            codes=take("codes", {n: shapes[n] for n in weights}),
            scales=take("scales", {n: shapes[n][:1] for n in weights}),
            factors=take("factors", factor_layout) if factor_layout is not None else None,
            extra=extra,
        )
        member.__dict__["_info"] = info
        return member.validate()

    def to_row(self) -> dict[str, Any]:
        """The tensor columns (flat numpy arrays or None), architecture columns and factor_shapes."""
        row: dict[str, Any] = {
            "architecture": self.architecture,
            "arch_options": json.dumps(self.arch_config, sort_keys=True),
        }
        for name in ("params", "mask", "init_params", "codes", "scales", "factors"):
            tensors = getattr(self, name)
            row[name] = (
                None if tensors is None else torch.cat([t.flatten() for t in tensors.values()]).numpy()
            )
        row["factor_shapes"] = self.factor_shapes() if self.factors is not None else None
        return row

    def replace(self, **fields: Any) -> MemberTensors:
        """A copy with some fields replaced (tensors are shared, not copied)."""
        kw = {k: getattr(self, k) for k in self.__dataclass_fields__}
        kw.update(fields)
        out = MemberTensors(**kw)
        if "architecture" not in fields and "arch_config" not in fields and "_info" in self.__dict__:
            out.__dict__["_info"] = self.__dict__["_info"]
        return out


def architecture_signature(name: str, config: dict) -> str:
    return f"{name} {json.dumps(config, sort_keys=True)}"


def architecture_family(name: str, config: dict) -> tuple:
    """What members sharing one tokenizer must have in common: the same layers (parameter names),
    input shape and classes; widths may differ (neuron_pruned members are narrower)."""
    info = arch_info(name, json.dumps(config, sort_keys=True))
    return (name, tuple(info.arch.input_shape), info.arch.num_classes, tuple(info.shapes))


def family_tag(name: str, config: dict) -> str:
    """A readable name of an architecture family (see architecture_family), e.g.
    'mlp (1, 8, 8)->10 layers.0,layers.1,layers.2': keys the normalisation statistics of a tokenizer
    fitted on several families."""
    arch, shape, classes, params = architecture_family(name, config)
    layers = ",".join(dict.fromkeys(p.rsplit(".", 1)[0] for p in params))
    return f"{arch} {shape}->{classes} {layers}"


def _np_dtype(column: str):
    return {"params": np.float32, "mask": np.bool_, "codes": np.int8}.get(column, np.float32)


def _bits(t: torch.Tensor) -> torch.Tensor:
    """Reinterpret floats as integers so equality is bitwise."""
    if t.dtype == torch.float32:
        return t.contiguous().view(torch.int32)
    if t.dtype == torch.float64:
        return t.contiguous().view(torch.int64)
    return t
