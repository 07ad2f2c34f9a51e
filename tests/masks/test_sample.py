"""Mask sampling end to end: a tiny MaskSystem exported as a model folder, exact layer-wise sparsity
from drawn and given inits, the folder round trip, `mole sample --init-zoo`."""

from __future__ import annotations

import json

import pytest
import torch

from mole.cli import main
from mole.diffusion.conditioning import model_args
from mole.diffusion.datamodule import ZooDataModule
from mole.diffusion.model_dir import export_model, load_model
from mole.diffusion.options import SampleOptions
from mole.diffusion.sample import sample
from mole.errors import ConfigError
from mole.masks.model import MaskModel
from mole.masks.sample import frozen_inits
from mole.masks.system import MaskSystem
from mole.nets import build_architecture
from mole.tokenizer import MemberTensors
from mole.zoo import store
from mole.zoo.variants.supermask import derive_seed, frozen_init
from tests.masks.helpers import TINY


@pytest.fixture(scope="module")
def trained(mask_zoo, tmp_path_factory):
    """(model folder, system, data module): a tiny mask model trained 12 steps on BCE and exported."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("mask-model")
    dm = ZooDataModule(
        str(mask_zoo), batch_size=4, fractions=(1.0, 0.0, 0.0), target="mask", cache_dir=str(out / "cache")
    )
    system = MaskSystem(MaskModel(**model_args(dm), **TINY), ema_decay=0.9)
    opt = system.configure_optimizers()["optimizer"]
    for _ in range(3):
        for batch in dm.train_dataloader():
            loss = system.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            system.ema.update_parameters(system.net)
    return export_model(system, dm, out / "model"), system, dm


@pytest.fixture(scope="module")
def supermask_row(mask_zoo) -> dict:
    return next(r for r in store.read_zoo(mask_zoo).to_pylist() if r["final"] and r["variant"] == "supermask")


def test_model_folder_round_trip(trained, tmp_path):
    path, system, dm = trained
    assert sorted(p.name for p in path.iterdir()) == ["mask_model", "mole.json", "tokenizer"]  # no scheduler
    net, scheduler, tok, meta = load_model(path)
    assert isinstance(net, MaskModel) and scheduler is None and not net.training
    assert meta["target"] == "mask" and meta["channels"] == system.net.config.channels
    assert meta["mask_prior"] is None and meta["variants"] == ["supermask"] and "prediction_type" not in meta
    assert json.loads((path / "mole.json").read_text()) == meta
    batch = next(iter(dm.train_dataloader()))
    context = batch["tokens"][..., slice(*meta["channels"]["init_params"])]
    args = (context, system.conditions(batch), batch["layer_ids"], batch["token_valid"])
    with torch.no_grad():
        assert torch.equal(net(*args), system(*args))  # the EMA copy, bitwise
    assert tok.stats is not None and tok.fields == dm.tokenizer.fields


def test_exact_sparsity_from_drawn_and_given_inits(trained, supermask_row):
    path = trained[0]
    drawn = sample(path, {}, num=3, options=SampleOptions(seed=1))  # the trained sparsity, 0.5; drawn inits
    assert [m.extra["init_seed"] for m in drawn] == [derive_seed(1, "init", i) for i in range(3)]
    row = MemberTensors.from_row(supermask_row)
    given = sample(path, {"sparsity": 0.5}, num=2, context=row)
    for m in drawn + given:
        for w in m.arch.weight_names():  # edge-popup's layer-wise top-k: exactly half of each layer
            assert (~m.mask[w]).sum().item() == round(0.5 * m.mask[w].numel())
            assert torch.equal(m.params[w], m.init_params[w] * m.mask[w])
    assert all(torch.equal(given[0].init_params[n], row.init_params[n]) for n in row.params)
    again = sample(
        path, {}, num=3, options=SampleOptions(seed=1, batch_size=2)
    )  # network i's init: its own seed
    assert all(
        torch.equal(a.init_params[n], b.init_params[n]) for a, b in zip(drawn, again) for n in a.params
    )
    glob = sample(path, {}, num=1, options=SampleOptions(seed=1, scope="global"))[0]
    n = sum(glob.mask[w].numel() for w in glob.arch.weight_names())
    assert sum((~glob.mask[w]).sum().item() for w in glob.arch.weight_names()) == round(0.5 * n)


def test_frozen_inits_drawn_per_network_or_given():
    arch = build_architecture("mlp", (1, 8, 8), 10, hidden=[16])
    inits, seeds = frozen_inits(arch, None, 3, 7, "normal")
    want = frozen_init(arch, seeds, "normal")
    assert all(torch.equal(inits[i][n], want[n][i]) for i in range(3) for n in want)
    assert seeds == [derive_seed(7, "init", i) for i in range(3)]
    other = build_architecture("mlp", (1, 8, 8), 10, hidden=[8])
    member = MemberTensors(
        other.name, other.config(), {n: p[0] for n, p in frozen_init(other, [0], "normal").items()}
    )
    with pytest.raises(ConfigError, match=r"^context: .* is not the model's architecture"):
        frozen_inits(arch, member, 2, 0, "normal")
    with pytest.raises(ConfigError, match=r"^context: 2 members for 3 networks \(give 1 or 3\)"):
        frozen_inits(arch, [member, member], 3, 0, "normal")


def test_sparsity_is_required_for_a_mask_model(trained, tmp_path):
    path, system, dm = trained
    meta = json.loads((path / "mole.json").read_text())
    meta["conditions"]["sparsity"] = {"kind": "continuous", "min": 0.5, "max": 0.8}  # no longer one value
    model = load_model(path)._replace(meta=meta)
    with pytest.raises(ConfigError, match=r"^conditions\.sparsity: required for a mask model"):
        sample(path, {}, num=1, model=model)


def test_mole_sample_from_a_zoo_members_init(trained, mask_zoo, supermask_row, tmp_path, capsys):
    out = tmp_path / "gen"
    argv = ["sample", trained[0], "--init-zoo", mask_zoo, "--init-member", supermask_row["member_id"]]
    code = main([str(a) for a in argv + ["--num", 2, "--out", out, "--progress", "false"]])
    assert code == 0, capsys.readouterr().err
    rows = store.read_zoo(out).to_pylist()
    spec = json.loads((out / store.SPEC).read_text())
    assert spec["spec"]["generated"]["init"] == f"{mask_zoo}:{supermask_row['member_id']}"
    for r in rows:
        assert r["init_params"] == supermask_row["init_params"] and r["sparsity"] == 0.5
    code = main([str(a) for a in ["sample", trained[0], "--init-zoo", mask_zoo, "--out", tmp_path / "x"]])
    assert code == 2 and "init_member: --init_zoo and --init_member come together" in capsys.readouterr().err
