"""scripts/bench_mixed.py on a tiny mixed model: B2 and B3 per cell, B10 against a dedicated model."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from mole.errors import ConfigError
from tests.diffusion.helpers import mixed_zoos, train_mixed

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_mixed.py"


def load():
    spec = importlib.util.spec_from_file_location("bench_mixed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_cell_gets_its_figures_and_b10_where_a_dedicated_model_is_given(tmp_path_factory, tmp_path):
    zoos = mixed_zoos(tmp_path_factory)
    mixed = train_mixed(zoos, tmp_path_factory.mktemp("bench-mixed"))
    cnn = train_mixed(zoos[1:2], tmp_path_factory.mktemp("bench-cnn"))  # the CNN cell's dedicated model
    name = 'cnn {"channels": [2], "hidden": [4], "kernel_size": 3} on digits'
    bench = load()
    out = tmp_path / "mixed.json"
    args = {
        "model": str(mixed),
        "out": str(out),
        "run": str(tmp_path / "run"),
        "steps": 2,
        "prompts": 2,
        "per_prompt": 1,
    }
    res = bench.main(**args, dedicated={name: str(cnn)})
    assert json.loads(out.read_text())["cells"] == json.loads(json.dumps(res["cells"]))
    assert len(res["cells"]) == 4 and res["b10_met"] is None  # one dedicated model of four cells
    for cell, figures in res["cells"].items():
        assert 0 < figures["b2"] < math.inf and 0 < figures["sgd_mean"] <= 1
        assert ("b10_ratio" in figures) == (cell == name)
    c = res["cells"][name]
    assert c["b10_ratio"] == pytest.approx(c["b2"] / c["dedicated_b2"]) and c["b10_met"] == (
        c["b10_ratio"] >= 0.98
    )
    with pytest.raises(ConfigError, match=r"^dedicated: no cell 'mlp'; the model's cells: cnn "):
        bench.main(**args, dedicated={"mlp": str(cnn)})
