"""What a report reads: zoo sets in roles (ReportInputs), and how zoo folders are read and sorted into them.

A generated zoo's role follows from its rows (`role_of`):
    masks   every row is a mask over a frozen init (params = init_params where mask, else 0): the
            supermask section (B6); IMP rows hold init_params and a mask too, but trained params
    sparse  a row was prompted or projected onto a sparsity > 0: the sparse section (B5)
    dense   no mask or frozen init, every row prompted with a test_acc: B2, B3 and B4
    other   anything else: accuracy and constraints only
Baseline folders give their rows by variant: magnitude / imp / random (B5), edge_popup and
lsq_supermask (B6).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mole.data import TaskData
from mole.errors import ConfigError, MoleError
from mole.eval.base import Row, json_column, load_rows, numeric_level, prompt_of
from mole.eval.benchmarks import PRUNING
from mole.zoo.store import read_json

ROLES = {  # role -> what it gives, in words (evaluate_zoos prints it for each zoo)
    "dense": "dense, prompted with test accuracies (B2, B3, B4)",
    "prompts": "a prompt sweep (B3)",
    "sparse": "prompted or projected onto sparsities (B5)",
    "masks": "masks over frozen inits (B6)",
    "other": "accuracy and constraints only",
}
THEORY = ("rss", "npp", "subset_sum")


@dataclass
class ZooSet:
    """One evaluated set of rows.

    Args:
        name: how tables and plots name it (e.g. its folder's name).
        label: its set in results.json's evaluations (e.g. "generated/<name>").
        rows: its final rows.
        sampling_seconds: the wall seconds its sampling took in all (B7); None: the rows' own
            extra["sampling_seconds"] shares.
    """

    name: str
    label: str
    rows: list[Row]
    sampling_seconds: float | None = None

    @property
    def temperature(self) -> float:
        """The sampling temperature its rows record (extra["temperature"]; 1 when absent)."""
        return float(json_column(self.rows[0].get("extra")).get("temperature", 1.0)) if self.rows else 1.0


@dataclass
class Theory:
    """Theory experiment rows ("rss", "npp", "subset_sum" -> rows) and their plots (same keys -> PNG)."""

    rows: dict[str, list[dict]]
    images: dict[str, Path] = field(default_factory=dict)


@dataclass
class ReportInputs:
    """Everything a report shows, each set in its role (an empty role leaves its section out).

    Args:
        data: the task every set is evaluated on.
        reference: every row (all snapshots) of the SGD-trained zoo; its final dense rows are the
            SGD members of B2 / B4, its dense snapshots the trajectories of B7.
        accuracy: dense zoos prompted with test accuracies: B2, B4 (and B7 with sgd_seconds_per_step).
        temperatures: the first accuracy set's prompts sampled at other temperatures (Temperature table).
        prompts: zoos prompted over an accuracy range: B3.
        sparse: zoos prompted or projected onto sparsities: B5.
        masks: supermasks over frozen inits: B6.
        other: further generated zoos (accuracy and constraints only).
        pruning: magnitude / imp / random baseline rows (B5).
        edge_popup: edge-popup baseline rows (B6; paired with the masks by init seed).
        construction: lsq_supermask baseline rows (B6: the least-squares construction, paired the same way).
        theory: theory rows and plots.
        sgd_seconds_per_step: one SGD step of one network on this machine (B7; None: no B7).
        stage_seconds: pipeline stage -> wall seconds, "total" included (B8; empty: no B8).
        preset: the quickstart preset's name ("" for none).
        notes: a section's lead sentence, replacing its generic one: "accuracy", "temperature",
            "masks"; "prompts" (how the prompt sets were prompted); "pruned" (whose members the
            pruning baselines pruned).
        header: lines under the report's first line (e.g. the zoos evaluated).
    """

    data: TaskData
    reference: list[Row] = field(default_factory=list)
    accuracy: list[ZooSet] = field(default_factory=list)
    temperatures: list[ZooSet] = field(default_factory=list)
    prompts: list[ZooSet] = field(default_factory=list)
    sparse: list[ZooSet] = field(default_factory=list)
    masks: list[ZooSet] = field(default_factory=list)
    other: list[ZooSet] = field(default_factory=list)
    pruning: list[Row] = field(default_factory=list)
    edge_popup: list[Row] = field(default_factory=list)
    construction: list[Row] = field(default_factory=list)
    theory: Theory | None = None
    sgd_seconds_per_step: float | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    preset: str = ""
    notes: dict[str, str] = field(default_factory=dict)
    header: list[str] = field(default_factory=list)

    @property
    def sgd(self) -> list[Row]:
        """The reference zoo's final dense rows: the SGD members."""
        return [r for r in self.reference if r["final"] and r["variant"] == "dense"]


# ---------------------------------------------------------------------------- folders
def read_folder(folder: Path, what: str, final_only: bool = True, tensors: bool | str = True) -> list[Row]:
    """The rows of zoo folder `folder` (`final_only` and `tensors` as in load_rows); a folder that is
    no zoo, or holds no rows, is a ConfigError naming it (field `what`)."""
    try:
        rows = load_rows(folder, final_only, tensors)
    except (MoleError, OSError) as e:
        problem = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        raise ConfigError(what, f"{folder} is not a zoo folder ({problem})") from None
    if not rows:
        raise ConfigError(what, f"{folder} holds no {'final ' if final_only else ''}rows")
    return rows


def over_frozen_init(row: Row) -> bool:
    """Whether a row is a mask over a frozen random init: its params are its init_params where its
    mask keeps them and 0 elsewhere (a supermask; an IMP row also stores both, with trained params)."""
    if row.get("init_params") is None or row.get("mask") is None:
        return False
    params, mask, init = (np.asarray(row[k]) for k in ("params", "mask", "init_params"))
    return bool(np.array_equal(params, np.where(mask, init, 0)))


def role_of(rows: Sequence[Row]) -> str:
    """The role of a generated zoo's rows in the report (see the module docstring)."""
    if all(map(over_frozen_init, rows)):
        return "masks"
    if any((numeric_level("sparsity", prompt_of(r).get("sparsity")) or 0.0) > 0 for r in rows):
        return "sparse"
    if all(r.get("mask") is None and r.get("init_params") is None for r in rows) and all(
        prompt_of(r).get("test_acc") is not None for r in rows
    ):
        return "dense"
    return "other"


def split_baselines(rows: Sequence[Row]) -> tuple[list[Row], list[Row], list[Row]]:
    """Baseline rows by use: (magnitude / imp / random rows, edge_popup rows, lsq_supermask rows);
    others are not used."""
    pruning = [r for r in rows if r["variant"] in PRUNING]
    return pruning, *([r for r in rows if r["variant"] == v] for v in ("edge_popup", "lsq_supermask"))


def task_of(row: Row) -> tuple[str, dict]:
    return row["task"], json_column(row.get("task_options"))


def architectures(rows: Sequence[Row]) -> set[str]:
    """Each row's architecture with its options, as one comparable string."""
    return {f"{r['architecture']} {json.dumps(json_column(r['arch_options']), sort_keys=True)}" for r in rows}


def check_same_task(rows: Sequence[Row], folder: Path, task: tuple[str, dict], what: str) -> None:
    """A ConfigError naming `folder` when its rows are of another task than `task`."""
    for r in rows:
        if task_of(r) != task:
            raise ConfigError(
                what,
                f"{folder} is task {r['task']} {r['task_options']}, the generated zoos {task[0]} {task[1]}",
            )


def check_architectures(rows: Sequence[Row], folder: Path, wanted: set[str], what: str) -> None:
    """A ConfigError naming `folder` when its rows hold none of the architectures in `wanted`."""
    if not architectures(rows) & wanted:
        raise ConfigError(
            what,
            f"{folder} has architecture {sorted(architectures(rows))}, the generated zoos {sorted(wanted)}",
        )


def unique_names(folders: Sequence[Path]) -> list[str]:
    """Each folder's name; "parent/name" where two folders share a name."""
    names = [f.name for f in folders]
    return [f"{f.parent.name}/{f.name}" if names.count(f.name) > 1 else f.name for f in folders]


# ---------------------------------------------------------------------------- theory
def read_csv(path: Path) -> list[dict]:
    """Rows of a CSV that mole.theory.io.write_csv wrote: numbers back to int / float, empty to None."""

    def value(text: str):
        if text == "":
            return None
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    with open(path, newline="") as f:
        return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def load_theory(folder: Path) -> Theory:
    """Theory rows and plots from a folder: rows.json as `mole quickstart` writes it (OUT/theory), or
    rss.csv / npp.csv / subset_sum.csv as `mole theory` writes them. A plot is FOLDER/<name>.png, or
    the quickstart's FOLDER/../subset_sum/subset_sum.png."""
    folder = Path(folder)
    if (folder / "rows.json").is_file():
        saved = read_json(folder / "rows.json", "theory rows")
        rows = {k: list(saved.get(k) or []) for k in THEORY}
    else:
        rows = {k: read_csv(folder / f"{k}.csv") if (folder / f"{k}.csv").is_file() else [] for k in THEORY}
    if not any(rows.values()):
        raise ConfigError("theory", f"{folder} holds no rows.json, rss.csv, npp.csv or subset_sum.csv")
    images = {}
    for k in THEORY:
        found = [p for p in (folder / f"{k}.png", folder.parent / k / f"{k}.png") if p.is_file()]
        if found:
            images[k] = found[0]
    return Theory(rows, images)
