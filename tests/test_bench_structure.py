"""`mole bench structure`: sparse and quantized draws of a model told the level, projections, baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mole.bench.structure import level_of, run_structure, top_prompt
from mole.cli import main
from mole.diffusion.model_dir import read_meta
from mole.diffusion.options import SampleOptions
from mole.errors import ConfigError
from mole.eval.base import load_rows
from mole.zoo.build import build_zoo
from mole.zoo.spec import ZooSpec
from tests.conftest import TINY_ZOO
from tests.diffusion.test_sample import VARIANTS, train_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-structure")
    spec = {**TINY_ZOO, "name": "tiny-structure", "variants": VARIANTS}
    build_zoo(ZooSpec.from_dict(spec), root / "zoo", progress=False)
    return train_model(root / "zoo", root)


def test_generated_rows_with_their_baselines(model, tmp_path):
    options = SampleOptions(steps=2, seed=3, timestep_spacing="trailing")
    path = run_structure(model, tmp_path, sparsities=[0.5], bits=[4, "ternary"], num=2, options=options)
    r = json.loads(path.read_text())
    assert r["options"]["timestep_spacing"] == "trailing" and r["options"]["steps"] == 2  # told apart by file
    (s,) = r["sparsity"]
    assert s["prompt"]["variant"] == "magnitude" and s["prompt"]["sparsity"] == 0.5  # no IMP in this zoo
    assert s["weights_structure"] == {"sparsity": "weights"} and s["channel_structure"] == {
        "sparsity": "channel"
    }
    assert len(s["weights"]) == len(s["channel"]) == len(s["dense"]) == 2
    assert s["weights"] != s["channel"]  # the same draws, pruned by |w| or by their mask channel
    assert s["magnitude"] and s["imp"] and s["mean"]["weights"] == pytest.approx(np.mean(s["weights"]))
    assert s["reaches"]["weights"]["magnitude"] == (s["mean"]["weights"] >= s["mean"]["magnitude"])
    assert s["reaches"]["channel"]["dense"] == (s["mean"]["channel"] >= s["mean"]["dense"])
    rows = load_rows(tmp_path / "baselines")
    assert {row["variant"] for row in rows} == {"magnitude", "imp"}
    assert [b["level"] for b in r["bits"]] == [4, "ternary"]
    for b in r["bits"]:
        assert b["channel_structure"] == {"bits": "channel"} and b["ptq"] and b["qat"] == []
        assert b["mean"]["qat"] is None and b["reaches"]["weights"]["qat"] is None
    assert (tmp_path / "plots" / "structure.png").stat().st_size > 0
    top = read_meta(model)["conditions"]["test_acc"]["max"]  # every prompt inside the trained range
    assert all(e["prompt"]["test_acc"] <= top for e in [*r["sparsity"], *r["bits"]])


def test_ranks_compare_with_the_zoos_low_rank_members(model, tmp_path):
    options = SampleOptions(steps=2, seed=3)
    path = run_structure(model, tmp_path, sparsities=[], bits=[], num=2, options=options, ranks=[4])
    (e,) = json.loads(path.read_text())["rank"]
    assert e["prompt"]["variant"] == "lowrank" and e["weights_structure"] == {"rank": "weights"}
    assert e["channel_structure"] == {"rank": "channel"}  # its tokens carry factors: U V of its own
    assert set(e["reaches"]) == {"weights", "channel"} and e["channel"] != e["weights"]
    assert len(e["weights"]) == len(e["channel"]) == len(e["dense"]) == 2
    assert e["svd"] and e["factorized"] == []
    assert e["reaches"]["weights"]["factorized"] is None
    with pytest.raises(ConfigError, match="^model: its zoo has no lowrank row at rank 8$"):
        run_structure(model, tmp_path / "r8", sparsities=[], bits=[], num=1, options=options, ranks=[8])


def test_prompts_take_the_best_row_of_the_nearest_level(model):
    rows = load_rows(read_meta(model)["zoo"])
    at_half = [row["test_acc"] for row in rows if row["variant"] == "magnitude"]
    assert top_prompt(rows, "magnitude", "sparsity", 0.9) == max(at_half)  # 0.5 is the nearest level
    ternary = [
        row["test_acc"] for row in rows if row["variant"] == "quantized" and level_of(row) == "ternary"
    ]
    assert ternary and top_prompt(rows, "quantized", "bits", "ternary") == max(ternary)
    with pytest.raises(ConfigError, match="^model: its zoo has no quantized row at bits 8$"):
        top_prompt(rows, "quantized", "bits", 8)
    # a best row above the trained range (a validation or test member's) is prompted at the range's top
    top = max(at_half)
    assert top_prompt(rows, "magnitude", "sparsity", 0.5, ceiling=top - 0.01) == top - 0.01
    assert top_prompt(rows, "magnitude", "sparsity", 0.5, ceiling=1.0) == top


def test_command_prints_every_level(model, tmp_path, capsys):
    args = ["bench", "structure", model, "--out", tmp_path, "--sparsities", "[0.5]", "--bits", "[4]"]
    code = main([str(a) for a in [*args, "--num", 2, "--steps", 2, "--progress", "false"]])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and out[0].startswith("sparsity 0.5: weights ") and out[1].startswith("bits 4: weights ")
