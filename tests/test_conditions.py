"""The condition table: its rows, what the data module, conditioning and evaluators read from it."""

from __future__ import annotations

import math

import numpy as np

from mole.conditions import BY_NAME, CATEGORICAL, CONDITIONS, KINDS, LEVELS, TERNARY_BITS, conditions
from mole.diffusion.conditioning import condition_specs
from mole.diffusion.datamodule import ZooDataModule
from mole.eval import base
from mole.zoo.store import SCHEMA
from tests.tokenizer.helpers import tiny_zoo, variant_zoo


def test_the_table():
    assert [c.name for c in CONDITIONS] == [
        "test_acc", "test_loss", "sparsity", "bits", "rank", "start_test_loss", "start_test_acc",
        "variant", "architecture", "task",
    ]  # fmt: skip
    assert all(c.kind in KINDS and c.column in SCHEMA.names for c in CONDITIONS)
    assert CATEGORICAL == ("variant", "architecture", "task")
    assert LEVELS == {"test_acc": None, "test_loss": None, "sparsity": 0.0, "bits": 32, "rank": 0}
    assert base.CONDITIONS == LEVELS  # the evaluators' prompted levels
    assert [c.name for c in conditions()] == [c.name for c in CONDITIONS if not c.start]
    assert BY_NAME["start_test_loss"].column == "test_loss" and BY_NAME["rank"].integer
    row = {"sparsity": None, "bits": None, "rank": 4, "test_acc": 0.5}
    assert [BY_NAME[n].value(row) for n in ("sparsity", "bits", "rank", "test_acc")] == [0.0, 32, 4, 0.5]
    # a ternary member stores 2-bit codes, and is conditioned on log2(3) bits: not the 2-bit grid
    ternary = {"bits": 2, "variant_config": '{"bits": 2, "mode": "ptq", "scheme": "ternary"}'}
    assert BY_NAME["bits"].value(ternary) == TERNARY_BITS == math.log2(3)
    assert (
        BY_NAME["bits"].value(
            {"bits": 2, "variant_config": '{"bits": 2, "mode": "qat", "scheme": "symmetric"}'}
        )
        == 2
    )


def test_items_and_specs_follow_the_table(tmp_path_factory, tmp_path):
    zoo = variant_zoo(tiny_zoo(tmp_path_factory), tmp_path / "zoo")
    dm = ZooDataModule(str(zoo), fractions=(1.0, 0.0, 0.0), cache_dir=str(tmp_path / "cache"))
    dm.setup()
    ds = dm.datasets["train"]
    specs = condition_specs(dm)
    assert list(specs) == [c.name for c in conditions()]  # the order too: it orders the dropout draws
    for i in range(len(ds)):
        row, cond = ds.row(ds.rows[i]), ds[i]["cond"]
        assert list(cond) == list(specs)
        for c in conditions():
            if c.kind == "categorical":
                assert dm.vocab[c.name][cond[c.name]] == row[c.column]
            else:
                assert isinstance(cond[c.name], np.int64 if c.integer else np.float32)
                assert cond[c.name] == np.float32(c.value(row))
    assert specs["bits"]["min"] == 4 and specs["bits"]["max"] == 32 and specs["rank"]["min"] == 0
    pairs = ZooDataModule(
        str(zoo), mode="pairs", fractions=(1.0, 0.0, 0.0), cache_dir=str(tmp_path / "cache")
    )
    pair_specs = condition_specs(pairs)
    assert list(pair_specs) == [c.name for c in CONDITIONS]
    assert pair_specs["start_test_loss"] == pair_specs["test_loss"]
