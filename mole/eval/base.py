"""The evaluator interface: an EvalSet of zoo rows in, (metric, value) pairs out.

Members are zoo rows (mole.zoo.store.SCHEMA: dicts, e.g. from `read_zoo(path).to_pylist()`). A row's
prompt (what it was asked to be) is extra["prompt"] for generated members (mole.diffusion.generated),
else the condition keys of its variant_config (e.g. a magnitude row's {"sparsity": 0.5, ...}).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from mole.conditions import LEVELS
from mole.data import TaskData
from mole.errors import ConfigError
from mole.tokenizer import MemberTensors, canonical_order
from mole.tokenizer.canonical import match_order, match_reference
from mole.zoo.quant import level_bits
from mole.zoo.store import SCHEMA, json_column, read_zoo
from mole.zoo.train import member_losses

Row = dict[str, Any]
Metric = tuple[str, float]

# Prompted conditions evaluators compare with what a member achieved: condition -> the value a null
# in its zoo column stands for (mole.conditions: dense, float32 weights, full rank). The achieved
# value is the zoo column of the same name.
CONDITIONS: dict[str, float | None] = dict(LEVELS)
ALIGNS = ("match", "canonical", "none")


# ---------------------------------------------------------------------------- rows and prompts
def as_rows(rows: pa.Table | Iterable[Mapping[str, Any]]) -> list[Row]:
    """Zoo rows as a list of dicts (an Arrow table is converted with to_pylist)."""
    if isinstance(rows, pa.Table):
        return rows.to_pylist()
    return [dict(r) for r in rows]


TENSOR_COLUMNS = ("params", "mask", "init_params", "codes", "scales", "factors")  # the heavy columns


def load_rows(zoo: str | Path, final_only: bool = True, tensors: bool | str = True) -> list[Row]:
    """The rows of a zoo folder (verified against its manifest); only final snapshots by default.

    Args:
        zoo: the zoo folder.
        final_only: keep only final snapshots (filtered in Arrow, before rows become Python objects).
        tensors: keep the tensor columns (TENSOR_COLUMNS): True on every row, False on none, "final"
            on final rows alone (a trajectory's earlier snapshots light: what time_to_network and a
            zoo's accuracy spread read). A light row also gets "row", its position in the zoo's
            table, to fetch it whole later (rows_at). As Python lists a 5k-parameter row costs
            ~0.4 MB, so 36k snapshots took 14 GB with them.
    """
    if tensors not in (True, False, "final"):
        raise ValueError(f"tensors: got {tensors!r}; valid: True, False, 'final'")
    light = [c for c in SCHEMA.names if c not in TENSOR_COLUMNS]
    table = read_zoo(Path(zoo), columns=None if tensors else light)
    final = pc.fill_null(table["final"], False)
    if tensors == "final" and not final_only:  # one read: finals whole, the rest light and numbered
        whole = iter(table.filter(final).to_pylist())
        rest = table.select(light).append_column("row", pa.array(np.arange(table.num_rows))).to_pylist()
        return [next(whole) if r["final"] else r for r in rest]
    if not tensors:
        table = table.append_column("row", pa.array(np.arange(table.num_rows)))
    return (table.filter(final) if final_only else table).to_pylist()


def rows_at(zoo: str | Path, rows: Sequence[Row]) -> list[Row]:
    """The whole rows (tensors included) of rows that load_rows(zoo, tensors=False) gave, in their order."""
    return read_zoo(Path(zoo)).take([r["row"] for r in rows]).to_pylist()


def prompt_of(row: Mapping[str, Any]) -> dict:
    """What a member was asked to be: extra["prompt"] with the levels it was projected onto without
    conditioning (extra["project"]), else the condition keys of variant_config."""
    extra = json_column(row.get("extra"))
    if "prompt" in extra:
        return {**(extra["prompt"] or {}), **(extra.get("project") or {})}
    config = json_column(row.get("variant_config"))
    return {k: v for k, v in config.items() if k in CONDITIONS}


def numeric_level(name: str, value: Any) -> float | None:
    """A prompted or achieved level as a number ("ternary" bits -> 2, null -> the neutral level)."""
    if value is None:
        value = CONDITIONS.get(name)
    if value == "ternary":
        value = level_bits(value)  # the stored code width, as the zoo's bits column holds it
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def achieved(row: Mapping[str, Any], name: str) -> float | None:
    """The level a member achieved for condition `name` (its zoo column, nulls filled)."""
    return numeric_level(name, row.get(name))


def summary(values: Sequence[float]) -> dict[str, float]:
    """mean, std (population, ddof = 0), min, max and median; all nan for no values."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return dict.fromkeys(("mean", "std", "min", "max", "median"), math.nan)
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
        "median": float(np.median(v)),
    }


# ---------------------------------------------------------------------------- tensors
def by_architecture(members: Sequence[MemberTensors]) -> dict[str, list[int]]:
    """Architecture signature -> indices of the members that have it (first-seen order)."""
    groups: dict[str, list[int]] = {}
    for i, m in enumerate(members):
        groups.setdefault(m.signature(), []).append(i)
    return groups


def flat_params(
    member: MemberTensors, align: str, reference: Mapping[str, torch.Tensor] | None = None
) -> np.ndarray:
    """The effective params as one float64 vector (P,), hidden neurons aligned if asked.

    align: "match" (weight matching to `reference`, mole.tokenizer.canonical.match_order),
    "canonical" (canonical sort) or "none". Only the params are permuted (a params-only copy), so
    members with factors of unknown axes align too.
    """
    bare = MemberTensors(member.architecture, member.arch_config, member.params)
    if align == "canonical":
        member = canonical_order(bare)[0]
    elif align == "match":
        member = match_order(bare, reference)[0]
    return torch.cat([t.flatten() for t in member.params.values()]).double().numpy()


def unit_rows(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """(N, P) matrix of the vectors scaled to unit L2 norm; an all-zero vector stays zero (cosine 0)."""
    x = np.stack(vectors)  # (N, P)
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (N, 1)
    return x / np.where(norms > 0, norms, 1.0)


@dataclass
class Predictions:
    """Per-member results on the test split: loss (N,), accuracy (N,), predicted classes (N, n_test)."""

    loss: np.ndarray
    acc: np.ndarray
    predictions: np.ndarray


@torch.no_grad()
def predict(members: Sequence[MemberTensors], data: TaskData, batch_size: int = 2048) -> Predictions:
    """Test loss, accuracy and predictions of members (stacked forward per architecture)."""
    x, y = data.split("test")
    n = len(members)
    loss, acc = np.zeros(n), np.zeros(n)
    preds = np.zeros((n, len(y)), dtype=np.int64)
    for idx in by_architecture(members).values():
        arch = members[idx[0]].arch
        params = {k: torch.stack([members[i].params[k] for i in idx]) for k in members[idx[0]].params}
        params = {k: v.to(x.device) for k, v in params.items()}  # (K, ...)
        loss_sum = torch.zeros(len(idx), dtype=torch.float64)
        for start in range(0, len(y), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            logits = arch.forward_stacked(params, xb)  # (K, B, C)
            loss_sum += member_losses(logits, yb).double().cpu() * len(yb)
            preds[idx, start : start + len(yb)] = logits.argmax(-1).cpu().numpy()
        loss[idx] = (loss_sum / max(len(y), 1)).numpy()
        acc[idx] = (preds[idx] == y.cpu().numpy()[None]).mean(1) if len(y) else math.nan
    return Predictions(loss, acc, preds)


# ---------------------------------------------------------------------------- what evaluators read
@dataclass
class EvalSet:
    """The members one evaluation reads, and what it may compare them with.

    Args:
        members: zoo rows being evaluated (generated networks, or a baseline's); an Arrow table is
            converted to dicts.
        reference: training members (novelty: the nearest of them; time_to_network: their trajectory
            snapshots, rows with `step` and `test_acc`), or None.
        data: the task, to (re)compute test metrics and predictions, or None.
        label: names the set in result rows, e.g. "generated", "magnitude".
    """

    members: list[Row]
    reference: list[Row] | None = None
    data: TaskData | None = None
    label: str = ""
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        self.members = as_rows(self.members)
        self.reference = None if self.reference is None else as_rows(self.reference)

    def _memo(self, key: tuple, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def rows(self, which: str = "members") -> list[Row]:
        rows = self.members if which == "members" else self.reference
        if rows is None:
            raise ValueError(f"the eval set {self.label!r} has no {which}")
        return rows

    def tensors(self, which: str = "members") -> list[MemberTensors]:
        """MemberTensors of every row of `which` ("members" or "reference"), built once."""
        return self._memo(("tensors", which), lambda: [MemberTensors.from_row(r) for r in self.rows(which)])

    def vectors(self, which: str, align: str) -> list[np.ndarray]:
        """Flat effective params (float64) of every row of `which`, aligned by `align`, built once.

        align="match" matches every member, on both sides, to one target per architecture: the
        MergeMany mean of the reference members of that architecture (of the members when the set
        has no reference), so a permuted copy of a member lands exactly on it."""

        def make() -> list[np.ndarray]:
            ms = self.tensors(which)
            return [flat_params(m, align, self.match_target(m) if align == "match" else None) for m in ms]

        return self._memo(("vectors", which, align), make)

    def match_target(self, member: MemberTensors) -> dict[str, torch.Tensor]:
        """The params members of `member`'s architecture are matched to (see `vectors`)."""
        sig = member.signature()

        def make() -> dict[str, torch.Tensor]:
            pool = self.tensors("reference") if self.reference else []
            same = [m for m in pool if m.signature() == sig] or [
                m for m in self.tensors("members") if m.signature() == sig
            ]
            return match_reference(
                [MemberTensors(m.architecture, m.arch_config, m.params) for m in same[:256]]
            )

        return self._memo(("match_target", sig), make)

    def outputs(self) -> Predictions:
        """The members' test loss, accuracy and predictions on `data`, computed once."""
        if self.data is None:
            raise ValueError(f"the eval set {self.label!r} has no task data")
        return self._memo(("outputs",), lambda: predict(self.tensors(), self.data))


# ---------------------------------------------------------------------------- the interface
class Evaluator(ABC):
    """One evaluation; subclasses are dataclasses whose fields are the options.

    `check` validates the options when one is built (a bad value raises a ConfigError naming
    `eval.<name>.<option>`); calling the evaluator on an EvalSet yields (metric, value) pairs.
    """

    name: ClassVar[str] = ""

    def __post_init__(self):
        self.check()

    @classmethod
    def options(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def field(self, key: str) -> str:
        return f"eval.{self.name}.{key}"

    def check(self) -> None:  # noqa: B027 (an optional hook: evaluators without options skip it)
        """Validate the options (ConfigError naming the field); the default accepts anything."""

    @abstractmethod
    def __call__(self, s: EvalSet) -> Iterator[Metric]:
        """Yield (metric, value) pairs for the eval set."""

    # ------------------------------------------------------------------ option checks
    def check_choice(self, key: str, valid: Sequence[Any]) -> None:
        value = getattr(self, key)
        if value not in valid:
            raise ConfigError(self.field(key), f"got {value!r}; valid: {', '.join(map(str, valid))}")

    def check_number(
        self, key: str, low: float | None = None, high: float | None = None, optional: bool = False
    ) -> None:
        """A real number in [low, high] (None allowed when `optional`)."""
        value = getattr(self, key)
        if value is None and optional:
            return
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or (low is not None and value < low) or (high is not None and value > high):
            bounds = f" in [{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
            raise ConfigError(self.field(key), f"must be a number{bounds}, got {value!r}")

    def check_flag(self, key: str) -> None:
        if not isinstance(getattr(self, key), bool):
            raise ConfigError(self.field(key), f"must be true or false, got {getattr(self, key)!r}")

    def require(self, s: EvalSet, what: str) -> None:
        """Fail loudly when the eval set lacks `what` ("reference" or "data")."""
        if getattr(s, what) is None:
            raise ConfigError(f"eval.{self.name}", f"needs EvalSet.{what} (set {s.label!r} has none)")
