"""`mole bench prompts`: prompt following inside the trained range and past the zoo's best (B3, B12)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mole.bench.prompts import past_row, prompts_table, run_prompts, zoo_reference
from mole.cli import main
from mole.diffusion.model_dir import read_meta, single_zoo
from mole.errors import ConfigError
from mole.eval.base import load_rows
from mole.zoo.build import build_zoo
from mole.zoo.spec import ZooSpec
from tests.conftest import TINY_ZOO
from tests.diffusion.test_sample import train_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-prompts")
    build_zoo(ZooSpec.from_dict({**TINY_ZOO, "name": "tiny-prompts"}), root / "zoo", progress=False)
    return train_model(root / "zoo", root)


def test_figures_inside_and_past_the_range(model, tmp_path):
    path = run_prompts(model, tmp_path, "test_acc", prompts=3, per_prompt=2, beyond=2, num=3)
    r = json.loads(path.read_text())
    spec = read_meta(model)["conditions"]["test_acc"]
    assert r["inside"]["prompts"] == pytest.approx(np.linspace(spec["min"], spec["max"], 3).tolist())
    assert np.asarray(r["inside"]["achieved"]).shape == (3, 2) and isinstance(r["inside"]["monotone"], bool)
    assert [row["extrapolated"] for row in r["past"]] == [False, True, True]
    assert [row["prompt"] for row in r["past"]] == pytest.approx([spec["max"], (spec["max"] + 1) / 2, 1.0])
    final = [row["test_acc"] for row in load_rows(read_meta(model)["zoo"])]
    assert r["zoo"]["best"] == pytest.approx(max(final)) and r["zoo"]["members"] == len(final)
    assert r["zoo"]["p90"] == pytest.approx(float(np.quantile(final, 0.9)))
    for row in r["past"]:
        assert 0.0 <= row["mean"] <= row["best"] <= 1.0
        assert row["best_reaches_zoo_best"] == (row["best"] >= r["zoo"]["best"])
    assert (tmp_path / "plots" / "prompts_test_acc.png").stat().st_size > 0
    table = prompts_table(path)
    assert f"the zoo's best tenth by validation averages {r['zoo']['by_validation']:.4f}" in table


def test_lower_is_better_for_loss():
    ref = {"best": 0.05, "p90": 0.08}
    row = past_row(0.0, True, np.array([0.1, 0.04, 0.07]), -1.0, ref)
    assert row["best"] == pytest.approx(0.04) and row["best_reaches_zoo_best"] and row["mean_reaches_zoo_p90"]
    row = past_row(0.0, True, np.array([0.1, 0.2]), -1.0, ref)
    assert row["best"] == pytest.approx(0.1) and not row["best_reaches_zoo_best"]
    assert not row["mean_reaches_zoo_p90"]


def test_loss_reference_is_the_lowest(model):
    meta = read_meta(model)
    losses = [row["test_loss"] for row in load_rows(meta["zoo"])]
    ref = zoo_reference(meta, "test_loss")
    assert ref["best"] == pytest.approx(min(losses)) and ref["p90"] == pytest.approx(
        float(np.quantile(losses, 0.1))
    )


@pytest.mark.parametrize(
    "condition,twin,higher", [("test_acc", "val_acc", True), ("test_loss", "val_loss", False)]
)
def test_by_validation_is_the_best_tenth_on_the_validation_split(model, condition, twin, higher):
    meta = read_meta(model)
    rows = load_rows(meta["zoo"], tensors=False)
    ranked = sorted(rows, key=lambda r: r[twin], reverse=higher)[: -(-len(rows) // 10)]
    ref = zoo_reference(meta, condition)
    assert ref["by_validation"] == pytest.approx(float(np.mean([r[condition] for r in ranked])))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"condition": "sparsity"}, "^condition: unknown 'sparsity'; valid: test_acc, test_loss$"),
        ({"beyond": -1}, "^beyond: must be an integer >= 0, got -1$"),
        ({"num": 0}, "^num: must be a positive integer, got 0$"),
    ],
)
def test_bad_arguments(model, tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        run_prompts(model, tmp_path, **kwargs)
    assert not list(tmp_path.iterdir())


def test_command_prints_its_figures(model, tmp_path, capsys):
    args = ["bench", "prompts", model, "--out", tmp_path, "--prompts", 2, "--per_prompt", 1, "--beyond", 1]
    code = main([str(a) for a in [*args, "--num", 2, "--steps", 2, "--progress", "false"]])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("test_acc: inside the range Spearman") and "(past the range)" in out
    assert (tmp_path / "prompts_test_acc.json").exists()


def test_a_model_of_several_zoos_is_measured_per_cell():
    meta = {"zoo": ["a", "b"]}
    with pytest.raises(
        ConfigError,
        match=r"^model: bench prompts reads the one zoo a model trained on; this one lists \['a', 'b'\]$",
    ):
        single_zoo(meta, "bench prompts")
    assert single_zoo({"zoo": "runs/zoo"}, "bench prompts") == "runs/zoo"
