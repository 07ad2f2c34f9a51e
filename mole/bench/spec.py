"""The benchmark matrix's config: cells (each names only its zoo spec), training seeds, one recipe.

A matrix file (configs/matrix/matrix.yaml) holds:

    cells: [digits_mlp.yaml, digits_cnn.yaml, ...]   # cell files; a cell is named by its file's stem
    seeds: [0, 1, 2]                                 # `mole train`'s seed_everything, one run each
    recipe:                                          # shared by every cell: `mole train` config,
      weights: ../quickstart/weights.yaml            # sampling and baselines, as the quickstart's
      sample: ../quickstart/sample.yaml
      baselines: ../quickstart/baselines.yaml

and a cell file holds `zoo: SPEC` (a zoo spec, mole.zoo.spec.ZooSpec). Every path is relative to the
file that names it; a list of paths is merged in order, later files overriding earlier ones (as the
quickstart's preset folders override its recipe). Nothing else is allowed in either file, so nothing
can be tuned per cell. Everything is read and validated before anything runs: a matrix that would
fail at its last cell fails at once, with a one-line ConfigError naming the field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mole.diffusion.options import check_sample_recipe
from mole.errors import ConfigError
from mole.pipeline import merged
from mole.zoo.spec import ZooSpec

RECIPE_PARTS = ("weights", "sample", "baselines")


@dataclass(frozen=True)
class Cell:
    """One cell: a zoo spec, run with the matrix's recipe.

    Args:
        name: the cell file's stem (its folder in the run).
        file: the cell file.
        zoo: the zoo spec, its files merged (a valid mole.zoo.spec.ZooSpec mapping).
    """

    name: str
    file: Path
    zoo: dict


@dataclass(frozen=True)
class Matrix:
    """A matrix file, read and validated.

    Args:
        file: the matrix file.
        cells: the cells to run, in the file's order.
        seeds: the weight model's training seeds.
        weights, sample, baselines: the recipe (a `mole train` config; the quickstart's sampling and
            baselines settings), the same for every cell.
        preset: the preset whose override files were merged into the recipe ("default": none).
    """

    file: Path
    cells: tuple[Cell, ...]
    seeds: tuple[int, ...]
    weights: dict
    sample: dict
    baselines: dict
    preset: str = "default"


def shown(path: Path) -> str:
    """A path as the user can find it: relative to the working folder when inside it."""
    try:
        return os.path.relpath(path) if Path.cwd() in path.resolve().parents else str(path)
    except ValueError:  # another drive
        return str(path)


def read_mapping(path: Path, field: str) -> dict[str, Any]:
    """The mapping a YAML file holds; a ConfigError on `field` naming the file otherwise."""
    if not path.is_file():
        raise ConfigError(field, f"no such file: {shown(path)}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(field, f"{shown(path)}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(field, f"{shown(path)}: must hold a mapping, got {type(raw).__name__}")
    return raw


def check_keys(raw: Mapping, allowed: Sequence[str], path: Path, field: str = "") -> None:
    """Every key of `raw` is allowed and every allowed key is there."""
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{field}{key}", f"unknown in {shown(path)}; valid: {', '.join(allowed)}")
    for key in allowed:
        if key not in raw:
            raise ConfigError(f"{field}{key}", f"missing in {shown(path)}")


def paths_of(value: Any, base: Path, field: str) -> list[Path]:
    """A path or a non-empty list of paths (strings), resolved against the folder `base`."""
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise ConfigError(field, f"must be a file path or a list of them, got {value!r}")
    return [base / v for v in items]


def merged_files(paths: Sequence[Path], field: str) -> dict[str, Any]:
    """The files' mappings merged in order (mole.pipeline.merged: later keys override)."""
    out: dict[str, Any] = {}
    for path in paths:
        out = merged(out, read_mapping(path, field))
    return out


def check_seeds(seeds: Any, field: str = "seeds") -> tuple[int, ...]:
    """A non-empty list of distinct non-negative integers."""
    if not isinstance(seeds, list) or not seeds:
        raise ConfigError(field, f"must be a non-empty list of training seeds, got {seeds!r}")
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool) or s < 0:
            raise ConfigError(field, f"must hold non-negative integers, got {s!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(field, f"repeats a seed: {seeds}")
    return tuple(seeds)


def load_cell(path: Path, field: str) -> Cell:
    """Read a cell file and its zoo spec (validated by mole.zoo.spec.ZooSpec)."""
    raw = read_mapping(path, field)
    check_keys(raw, ("zoo",), path, f"{path.stem}.")
    zoo = merged_files(paths_of(raw["zoo"], path.parent, f"{path.stem}.zoo"), f"{path.stem}.zoo")
    try:
        ZooSpec.from_dict(zoo)
    except ConfigError as e:
        raise ConfigError(f"{path.stem}.zoo.{e.field}", str(e).split(": ", 1)[1]) from None
    return Cell(path.stem, path, zoo)


def load_matrix(
    path: str | Path,
    cells: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    preset: str | None = None,
) -> Matrix:
    """Read and validate a matrix file, its cells and its recipe.

    Args:
        path: the matrix file.
        cells: run only these cells (by name; default: all).
        seeds: these training seeds instead of the file's.
        preset: also merge, after each recipe file, the file of the same name in the preset's folder
            beside it (configs/quickstart/tiny/weights.yaml for "tiny"), as `mole quickstart --preset`.
    """
    path = Path(path)
    raw = read_mapping(path, "matrix")
    check_keys(raw, ("cells", "seeds", "recipe"), path)
    names = raw["cells"]
    if not isinstance(names, list) or not names or not all(isinstance(c, str) and c for c in names):
        raise ConfigError("cells", f"must be a non-empty list of cell files, got {names!r}")
    files = [path.parent / c for c in names]
    known = [f.stem for f in files]
    if len(set(known)) != len(known):
        raise ConfigError("cells", f"two cell files share a name: {known}")
    if cells is not None:
        unknown = [c for c in cells if c not in known]
        if unknown or not cells:
            raise ConfigError("cells", f"unknown {unknown or cells!r}; valid: {', '.join(known)}")
    # only the chosen cells are read: the others may name zoo specs not written yet
    chosen = tuple(
        load_cell(f, f"cells[{i}]") for i, f in enumerate(files) if cells is None or f.stem in cells
    )
    recipe = raw["recipe"]
    if not isinstance(recipe, dict):
        raise ConfigError("recipe", f"must be a mapping of {', '.join(RECIPE_PARTS)}, got {recipe!r}")
    check_keys(recipe, RECIPE_PARTS, path, "recipe.")
    parts = {}
    for part in RECIPE_PARTS:
        files = paths_of(recipe[part], path.parent, f"recipe.{part}")
        if preset not in (None, "default"):
            override = files[0].parent / preset / files[0].name
            if not override.is_file():
                raise ConfigError("preset", f"no {preset!r} override of {shown(files[0])}: {shown(override)}")
            files.append(override)
        parts[part] = merged_files(files, f"recipe.{part}")
        if part == "sample":
            check_sample_recipe(parts[part], ", ".join(shown(f) for f in files))
    return Matrix(path, chosen, check_seeds(list(seeds) if seeds is not None else raw["seeds"]),
                  **parts, preset=preset or "default")  # fmt: skip
