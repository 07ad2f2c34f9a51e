"""Tiny zoos the baseline tests share: a 64-16-10 digits zoo (dense + imp) and a 64-16-16-10 subset-sum target."""

from __future__ import annotations

from pathlib import Path

import pytest

from mole.zoo import store
from mole.zoo.build import build_zoo
from mole.zoo.spec import ZooSpec
from tests.conftest import TINY_ZOO

IMP = {"rounds": 2, "prune_fraction": 0.5}
# group_size 4 splits the 6 members into the zoo's two stacks (4 + 2), as the baselines must too
SPEC = {**TINY_ZOO, "variants": ["dense", {"name": "imp", "options": IMP}]}


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("baselines") / "tiny"
    build_zoo(ZooSpec.from_dict(SPEC), out, progress=False)
    return out


@pytest.fixture(scope="session")
def zoo_rows(tiny_zoo) -> list[dict]:
    return store.read_zoo(tiny_zoo).to_pylist()


@pytest.fixture(scope="session")
def dense_rows(zoo_rows) -> list[dict]:
    """The zoo's final dense members (what `mole baselines run` starts from)."""
    return [r for r in zoo_rows if r["variant"] == "dense" and r["final"]]


@pytest.fixture(scope="session")
def target_zoo(tmp_path_factory) -> Path:
    """A zoo of one trained 64-16-16-10 digits MLP (seed 0, 30 epochs; test accuracy 0.971 when measured)."""
    from mole.baselines.commands import train_target

    out = tmp_path_factory.mktemp("baselines") / "target"
    train_target(out, [16, 16], epochs=30, seed=0)
    return out


@pytest.fixture(scope="session")
def target_row(target_zoo) -> dict:
    return next(r for r in store.read_zoo(target_zoo).to_pylist() if r["final"])
