"""Sweep specs: a YAML file becomes a frozen, validated ZooSpec; members and groups are planned from it
(the plans themselves: mole.zoo.plan)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mole.data import TASKS
from mole.errors import ConfigError
from mole.nets import ARCHITECTURES
from mole.zoo.plan import GroupPlan, MemberPlan, SnapshotSchedule
from mole.zoo.variants import VARIANTS

OPTIMIZERS = ("sgd", "adam", "adamw")


# ---------------------------------------------------------------------------- hyperparameter space
@dataclass(frozen=True)
class Range:
    """A continuous range sampled uniformly (or log-uniformly when `log`)."""

    low: float
    high: float
    log: bool = False

    def sample(self, rng: np.random.Generator) -> float:
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))


Value = Any  # a fixed scalar, a tuple of choices, or a Range


def _sample(value: Value, rng: np.random.Generator):
    if isinstance(value, Range):
        return value.sample(rng)
    if isinstance(value, tuple):
        return value[int(rng.integers(len(value)))]
    return value


@dataclass(frozen=True)
class HParamSpace:
    """Per-member hyperparameters. Each is a fixed value, a list of choices, or {low, high, log}.

    `optimizer`, `batch_size` and `epochs` must be fixed or choices: members that share them train
    together in one stacked group.
    """

    lr: Value = Range(0.02, 0.2, log=True)
    weight_decay: Value = 0.0
    init_scale: Value = 1.0
    momentum: Value = 0.9
    batch_size: Value = (64,)
    epochs: Value = (10,)
    optimizer: Value = ("sgd",)


@dataclass(frozen=True)
class VariantSpec:
    """One variant of the sweep and its options (levels such as sparsity may be lists)."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ZooSpec:
    """A whole sweep: which task, architecture and variants, how many members, which hyperparameters."""

    name: str
    task: str = "digits"
    task_options: Mapping[str, Any] = field(default_factory=dict)
    architecture: str = "mlp"
    arch_options: Mapping[str, Any] = field(default_factory=dict)
    variants: tuple[VariantSpec, ...] = (VariantSpec("dense"),)
    members: int = 16
    group_size: int = 64
    seed: int = 0
    hparams: HParamSpace = HParamSpace()
    snapshots: SnapshotSchedule = SnapshotSchedule()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_yaml(cls, path: str | Path) -> ZooSpec:
        path = Path(path)
        if not path.is_file():
            raise ConfigError("config", f"no such file: {path}")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError("config", f"{path} is not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise ConfigError("config", f"{path} must hold a mapping of fields")
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ZooSpec:
        _check_keys(raw, cls, "")
        kw = dict(raw)
        if "name" not in kw:
            raise ConfigError("name", "missing (the zoo's name)")
        kw["hparams"] = _parse_hparams(raw.get("hparams", {}))
        kw["snapshots"] = _parse_snapshots(raw.get("snapshots", {}))
        kw["variants"] = _parse_variants(raw.get("variants", ["dense"]))
        for key in ("task_options", "arch_options"):
            if not isinstance(kw.get(key, {}), Mapping):
                raise ConfigError(key, "must be a mapping")
        spec = cls(**kw)
        spec.validate()
        return spec

    def validate(self) -> None:
        """Check names and ranges; raise ConfigError naming the first bad field."""
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ConfigError("name", f"must be a non-empty string without '/', got {self.name!r}")
        TASKS.get(self.task, field="task")
        ARCHITECTURES.get(self.architecture, field="architecture")
        for i, v in enumerate(self.variants):
            VARIANTS.get(v.name, field=f"variants[{i}].name")
        for key in ("members", "group_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(key, f"must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError("seed", f"must be a non-negative integer, got {self.seed!r}")
        hp = self.hparams
        _check_value(hp.lr, "hparams.lr", lambda x: x > 0, "> 0")
        _check_value(hp.weight_decay, "hparams.weight_decay", lambda x: x >= 0, ">= 0")
        _check_value(hp.init_scale, "hparams.init_scale", lambda x: x > 0, "> 0")
        _check_value(hp.momentum, "hparams.momentum", lambda x: 0 <= x < 1, "in [0, 1)")
        for key in ("batch_size", "epochs"):
            _check_value(
                getattr(hp, key),
                f"hparams.{key}",
                lambda x: isinstance(x, int) and x > 0,
                "a positive integer",
                discrete=True,
            )
        _check_value(
            hp.optimizer,
            "hparams.optimizer",
            lambda x: x in OPTIMIZERS,
            f"one of {', '.join(OPTIMIZERS)}",
            discrete=True,
        )
        s = self.snapshots
        if s.every is not None and (not isinstance(s.every, int) or s.every <= 0):
            raise ConfigError("snapshots.every", f"must be a positive integer, got {s.every!r}")
        if any(not isinstance(x, int) or x < 0 for x in s.steps):
            raise ConfigError("snapshots.steps", f"must be non-negative integers, got {list(s.steps)}")
        if isinstance(s.random, bool) or not isinstance(s.random, int) or s.random < 0:
            raise ConfigError("snapshots.random", f"must be a non-negative integer, got {s.random!r}")

    # ------------------------------------------------------------------ identity
    def to_dict(self) -> dict:
        out = _jsonable(dataclasses.asdict(self))
        if (
            not self.snapshots.random
        ):  # added later: at its default it stays out, so old zoos keep their names
            del out["snapshots"]["random"]
        return out

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON of the full spec (defaults included): names the zoo's members."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------- planning
def plan_members(spec: ZooSpec) -> list[MemberPlan]:
    """Draw each member's hyperparameters from its own seed sequence (independent of `members`)."""
    out = []
    for i in range(spec.members):
        rng = np.random.default_rng(np.random.SeedSequence([spec.seed, i]))
        seed = int(rng.integers(2**31 - 1))
        drawn = {f.name: _sample(getattr(spec.hparams, f.name), rng) for f in dataclasses.fields(HParamSpace)}
        out.append(MemberPlan(index=i, seed=seed, **drawn))
    return out


def plan_groups(spec: ZooSpec) -> list[GroupPlan]:
    """Split members into shards: sorted by (optimizer, batch_size, epochs), then cut into group_size chunks."""
    by_key: dict[tuple, list[MemberPlan]] = {}
    for m in plan_members(spec):
        by_key.setdefault((m.optimizer, m.batch_size, m.epochs), []).append(m)
    groups = []
    for key in sorted(by_key):
        ms = by_key[key]
        for start in range(0, len(ms), spec.group_size):
            groups.append(GroupPlan(shard=len(groups), members=tuple(ms[start : start + spec.group_size])))
    return groups


# ---------------------------------------------------------------------------- parsing helpers
def _check_keys(raw: Mapping, cls, prefix: str) -> None:
    if not isinstance(raw, Mapping):
        raise ConfigError(prefix.rstrip(".") or "config", "must be a mapping")
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in valid:
            raise ConfigError(f"{prefix}{key}", f"unknown field; valid: {', '.join(valid)}")


def _parse_value(value, path: str) -> Value:
    if isinstance(value, Mapping):
        _check_keys(value, Range, f"{path}.")
        if "low" not in value or "high" not in value:
            raise ConfigError(path, "a range needs both 'low' and 'high'")
        r = Range(float(value["low"]), float(value["high"]), bool(value.get("log", False)))
        if r.low > r.high:
            raise ConfigError(path, f"low {r.low} > high {r.high}")
        return r
    if isinstance(value, list):
        if not value:
            raise ConfigError(path, "an empty list of choices")
        return tuple(value)
    return value


def _parse_hparams(raw) -> HParamSpace:
    _check_keys(raw, HParamSpace, "hparams.")
    return HParamSpace(**{k: _parse_value(v, f"hparams.{k}") for k, v in raw.items()})


def _parse_snapshots(raw) -> SnapshotSchedule:
    _check_keys(raw, SnapshotSchedule, "snapshots.")
    kw = dict(raw)
    if "steps" in kw:
        if not isinstance(kw["steps"], list):
            raise ConfigError("snapshots.steps", "must be a list of steps")
        kw["steps"] = tuple(kw["steps"])
    return SnapshotSchedule(**kw)


def _parse_variants(raw) -> tuple[VariantSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("variants", "must be a non-empty list")
    out = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            out.append(VariantSpec(item))
        elif isinstance(item, Mapping):
            _check_keys(item, VariantSpec, f"variants[{i}].")
            if "name" not in item:
                raise ConfigError(f"variants[{i}].name", "missing")
            options = item.get("options", {})
            if not isinstance(options, Mapping):
                raise ConfigError(f"variants[{i}].options", "must be a mapping")
            out.append(VariantSpec(item["name"], dict(options)))
        else:
            raise ConfigError(f"variants[{i}]", f"must be a name or {{name, options}}, got {item!r}")
    return tuple(out)


def _check_value(value: Value, path: str, ok, what: str, discrete: bool = False) -> None:
    if isinstance(value, Range):
        if discrete:
            raise ConfigError(path, "must be a fixed value or a list of choices, not a range")
        candidates = [value.low, value.high]
        if value.log and value.low <= 0:
            raise ConfigError(path, f"a log range needs low > 0, got {value.low}")
    elif isinstance(value, tuple):
        candidates = list(value)
    else:
        candidates = [value]
    for c in candidates:
        if not discrete and (isinstance(c, bool) or not isinstance(c, (int, float))):
            raise ConfigError(path, f"must be a number, got {c!r}")
        if not ok(c):
            raise ConfigError(path, f"must be {what}, got {c!r}")


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
