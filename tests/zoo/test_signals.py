"""A tiny MNIST-1D zoo of 1-D CNNs through every variant: rows rebuild, factors reconstruct, tokens invert."""

from __future__ import annotations

import json

import pytest
import torch

from mole.data import load_task
from mole.tokenizer import MemberTensors
from mole.tokenizer.layer_chunk import LayerChunkTokenizer
from mole.tokenizer.neuron import NeuronTokenizer
from mole.zoo import store
from mole.zoo.build import build_zoo
from mole.zoo.export import module_from_row
from mole.zoo.spec import ZooSpec
from tests.tokenizer.helpers import reconstruct
from tests.tokenizer.test_roundtrip import check_roundtrip

TASK_OPTIONS = {"num_samples": 400}  # 288 train / 32 val / 80 test signals: a second to generate
SPEC = {
    "name": "tiny_signals",
    "task": "mnist1d",
    "task_options": TASK_OPTIONS,
    "architecture": "cnn",
    "arch_options": {"channels": [4, 6], "kernel_size": 5, "hidden": [8]},
    "variants": [
        "dense",
        {"name": "magnitude", "options": {"sparsity": 0.5}},
        {"name": "quantized", "options": {"bits": 4}},
        {"name": "lowrank", "options": {"rank": 2, "conv": ["cp", "tucker", "tt"]}},
        {"name": "neuron_pruned", "options": {"width_fraction": 0.5, "samples": 64}},
        {"name": "supermask", "options": {"sparsity": 0.5}},
    ],
    "members": 3,
    "group_size": 3,
    "seed": 1,
    "hparams": {"lr": 0.05, "momentum": 0.9, "batch_size": [32], "epochs": [8]},
    "snapshots": {"every": 40, "include_init": True},
}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("signals") / "zoo"
    build_zoo(ZooSpec.from_dict(SPEC), out, progress=False)
    return store.read_zoo(out).to_pylist()


def test_every_variant_builds_on_1d_kernels(zoo):
    assert {r["variant"] for r in zoo} == {v if isinstance(v, str) else v["name"] for v in SPEC["variants"]}
    dense = [r for r in zoo if r["variant"] == "dense"]
    assert min(r["step"] for r in dense) == 0  # the init is a snapshot
    finals = [r for r in dense if r["final"]]
    assert len(finals) == 3 and max(r["test_acc"] for r in finals) > 0.2  # above chance (0.1)


def test_rows_rebuild_as_conv1d_modules_with_their_stored_accuracy(zoo):
    task = load_task("mnist1d", **TASK_OPTIONS)
    for row in (r for r in zoo if r["final"]):
        module = module_from_row(row)
        assert isinstance(module.convs[0], torch.nn.Conv1d)
        with torch.no_grad():
            acc = (module(task.x_test).argmax(1) == task.y_test).double().mean().item()
        assert acc == pytest.approx(row["test_acc"], abs=1e-12), row["variant"]


def test_lowrank_kernels_are_their_factors(zoo):
    rows = [r for r in zoo if r["variant"] == "lowrank"]
    assert len(rows) == 3 * 3  # members x (cp, tucker, tt)
    for row in rows:
        m = MemberTensors.from_row(row)
        conv = json.loads(row["variant_config"])["conv"]
        kernel_mode = {"cp": ("cp2", 0), "tucker": ("tk2", 0), "tt": ("tt2", 1)}[conv]  # (5, r) / (r, 5, 1)
        assert m.factors[f"convs.1.weight.{kernel_mode[0]}"].shape[kernel_mode[1]] == 5
        assert "convs.1.weight.cp3" not in m.factors and "convs.1.weight.tk3" not in m.factors  # 3 modes
        for name in ("convs.0.weight", "convs.1.weight"):
            torch.testing.assert_close(reconstruct(m.factors, name), m.params[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "tok", [LayerChunkTokenizer(chunk_size=16), NeuronTokenizer()], ids=["chunk", "neuron"]
)
def test_every_row_roundtrips_through_the_tokenizers(zoo, tok):
    for row in zoo:
        check_roundtrip(tok, MemberTensors.from_row(row))
