"""The model folder of a weights model: export (atomic, replacing), load bitwise, mole.json, bad folders."""

from __future__ import annotations

import json

import pytest
import torch

from mole.diffusion.conditioning import model_args
from mole.diffusion.datamodule import ZooDataModule
from mole.diffusion.denoiser import Denoiser
from mole.diffusion.model_dir import META_FILE, export_model, load_model, read_meta, task_options_of
from mole.diffusion.system import DiffusionSystem
from mole.errors import StoreError
from mole.zoo import store
from tests.tokenizer.helpers import tiny_zoo

TINY = {"width": 32, "depth": 1, "heads": 2}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return tiny_zoo(tmp_path_factory)


def test_export_and_load_model(zoo, cache, tmp_path):
    torch.manual_seed(0)
    dm = ZooDataModule(str(zoo), batch_size=4, cache_dir=cache)
    system = DiffusionSystem(Denoiser(**model_args(dm), **TINY), prediction_type="sample")
    batch = next(iter(dm.train_dataloader()))
    opt = system.configure_optimizers()["optimizer"]
    for _ in range(3):
        system.loss(batch).backward()
        opt.step()
        system.ema.update_parameters(system.net)
    path = export_model(system, dm, tmp_path / "model")
    export_model(system, dm, tmp_path / "model")  # replacing a model folder works, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left
    assert sorted(p.name for p in path.iterdir()) == ["denoiser", "mole.json", "scheduler", "tokenizer"]
    denoiser, scheduler, tokenizer, meta = load_model(path)
    assert isinstance(denoiser, Denoiser) and not denoiser.training
    t = torch.tensor([3, 500, 900, 999])
    args = (batch["tokens"], t, system.conditions(batch), batch["layer_ids"], batch["token_valid"])
    with torch.no_grad():
        assert torch.equal(denoiser(*args), system(*args))  # the EMA copy, bitwise
    assert scheduler.config.prediction_type == meta["prediction_type"] == "sample"
    assert tokenizer.name == meta["tokenizer"] == "neuron" and tokenizer.stats is not None
    assert (meta["architecture"], meta["arch_config"]["hidden"], meta["task"]) == ("mlp", [16], "digits")
    assert meta["target"] == "weights" and meta["context_dim"] == 0 and "channels" not in meta
    assert meta["conditions"]["variant"] == {"kind": "categorical", "vocab": ["dense"]}
    acc = meta["conditions"]["test_acc"]
    train_rows = store.read_zoo(zoo, columns=["test_acc"]).take(dm.datasets["train"].rows).to_pylist()
    assert (acc["min"], acc["max"]) == (
        min(r["test_acc"] for r in train_rows),
        max(r["test_acc"] for r in train_rows),
    )
    assert json.loads((path / META_FILE).read_text()) == meta == read_meta(path)
    assert task_options_of(meta) == store.read_json(zoo / store.SPEC, "spec")["spec"]["task_options"]
    assert task_options_of({"zoo": str(tmp_path / "nowhere")}) == {}


def test_bad_model_folders_are_one_line_errors(zoo, cache, tmp_path):
    with pytest.raises(StoreError, match=r"not a mole model folder \(mole.json is missing\)"):
        load_model(tmp_path)
    dm = ZooDataModule(str(zoo), batch_size=4, cache_dir=cache)
    path = export_model(DiffusionSystem(Denoiser(**model_args(dm), **TINY)), dm, tmp_path / "model")
    meta = json.loads((path / META_FILE).read_text())
    (path / META_FILE).write_text(json.dumps({**meta, "target": "biases"}))
    with pytest.raises(StoreError, match=r"mole.json: unknown target 'biases'; valid: weights, mask$"):
        load_model(path)
    (path / META_FILE).write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(StoreError, match=r"mole.json: format 99, this mole reads 1$"):
        load_model(path)
    (path / META_FILE).write_text("{")
    with pytest.raises(StoreError, match=r"mole.json: corrupt model metadata"):
        load_model(path)
    (path / META_FILE).write_text(json.dumps(meta))
    (path / "scheduler" / "scheduler_config.json").unlink()
    (path / "scheduler").rmdir()
    with pytest.raises(StoreError, match=r"not a mole model folder \(scheduler is missing\)"):
        load_model(path)
