"""supermask (edge-popup): sparsity means removed, rows rebuild exactly, masks beat random ones."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from mole.errors import ConfigError
from mole.nets import architecture_from_config, build_architecture
from mole.zoo import pruning, store
from mole.zoo.build import build_zoo
from mole.zoo.spec import ZooSpec
from mole.zoo.train import evaluate_stacked
from mole.zoo.variants import build_variant
from mole.zoo.variants.supermask import frozen_init, topk_masks
from tests.conftest import TINY_ZOO

SUPERMASK = {"sparsity": [0.5, 0.8], "masks_per_init": 2, "inits_per_member": 2, "epochs": 2}
MIXED = ["dense", {"name": "supermask", "options": SUPERMASK}, {"name": "neuron_pruned", "options": {}}]


def mixed_spec() -> ZooSpec:
    return ZooSpec.from_dict({**TINY_ZOO, "arch_options": {"hidden": [20]}, "variants": MIXED})


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def shard_rows(zoo: Path) -> list[dict]:
    """Rows read straight from the Parquet shards the manifest lists."""
    return [r for f in store.shard_files(zoo) for r in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zoo") / "mixed"
    build_zoo(mixed_spec(), out, progress=False)
    return out


@pytest.fixture(scope="module")
def masks_rows(mixed) -> list[dict]:
    return [r for r in shard_rows(mixed) if r["variant"] == "supermask"]


# ---------------------------------------------------------------------------- the mask itself
def test_sparsity_is_the_fraction_removed():
    """sparsity 0.8 keeps exactly 20% of every weight tensor (edge-popup's prune-rate would keep 80%)."""
    arch = build_architecture("mlp", (1, 8, 8), 10, hidden=[20])  # 1280 and 200 weights: 20% is whole
    scores = {n: torch.randn(3, *arch.param_shapes()[n]) for n in arch.weight_names()}
    masks = topk_masks(scores, 0.8)
    for name, m in masks.items():
        assert set(m.unique().tolist()) == {0.0, 1.0}
        assert (m.flatten(1).sum(1) == m[0].numel() // 5).all(), name  # 20% kept, per member
        for k in range(3):  # the largest |scores| are the ones kept
            assert scores[name][k].abs()[m[k] > 0].min() >= scores[name][k].abs()[m[k] == 0].max()


def test_ties_still_remove_exactly_the_requested_count():
    w = topk_masks({"w": torch.zeros(2, 10, 10)}, 0.8)["w"]  # every score tied
    assert w.flatten(1).sum(1).tolist() == [20, 20]
    v = topk_masks({"v": torch.tensor([[1.0, 1.0, 1.0, 2.0, 0.5]] * 3)}, 0.4)["v"]  # a tie at the cut
    assert v.sum(1).tolist() == [3, 3, 3] and (v[:, 3] == 1).all() and (v[:, 4] == 0).all()


def test_gradient_passes_straight_through_to_the_scores():
    scores = torch.randn(2, 4, 5, requires_grad=True)
    upstream = torch.randn(2, 4, 5)
    (topk_masks({"w": scores}, 0.5)["w"] * upstream).sum().backward()
    torch.testing.assert_close(scores.grad, upstream * scores.sign())  # d|s|/ds = sign(s)


def test_frozen_init_is_signed_kaiming_and_regenerates_from_its_seed():
    arch = build_architecture("mlp", (1, 8, 8), 10, hidden=[20])
    init = frozen_init(arch, [5, 6], "signed_constant")
    for name in arch.weight_names():
        std = (2.0 / arch.fan_in(name)) ** 0.5
        assert torch.allclose(init[name].abs(), torch.full_like(init[name], std))
        assert 0.4 < (init[name] > 0).double().mean() < 0.6
    assert all((init[n] == 0).all() for n in arch.param_shapes() if n.endswith("bias"))
    again = frozen_init(arch, [6], "signed_constant")
    assert all(torch.equal(again[n][0], init[n][1]) for n in init)
    assert not torch.equal(init["layers.0.weight"][0], init["layers.0.weight"][1])
    normal = frozen_init(arch, [5], "normal")["layers.0.weight"]
    assert abs(normal.std().item() - (2 / 64) ** 0.5) < 0.02


# ---------------------------------------------------------------------------- rows in a zoo
def test_rebuilt_from_stored_init_and_mask_reproduces_stored_accuracy(masks_rows, digits):
    for row in masks_rows[:: max(1, len(masks_rows) // 6)]:
        arch = architecture_from_config(row["architecture"], json.loads(row["arch_options"]))
        init, mask = np.asarray(row["init_params"]), np.asarray(row["mask"])
        effective = np.where(mask, init, 0.0).astype(np.float32)
        assert np.array_equal(effective, np.asarray(row["params"], dtype=np.float32))
        module = arch.to_module(arch.unflatten(torch.from_numpy(effective)))
        with torch.no_grad():
            acc = (module(digits.x_test).argmax(1) == digits.y_test).double().mean().item()
        assert acc == pytest.approx(row["test_acc"], abs=1e-12)
        extra = json.loads(row["extra"])  # the init also regenerates from its seed alone
        again = arch.flatten(frozen_init(arch, [extra["init_seed"]], extra["init"]))[0].numpy()
        assert np.array_equal(again, init.astype(np.float32))


def test_masks_per_init_share_the_init_and_inits_differ(masks_rows):
    spec = mixed_spec()
    assert len(masks_rows) == spec.members * 2 * 2 * 2  # members x sparsities x inits x masks
    assert len({r["member_id"] for r in masks_rows}) == len(masks_rows)
    by_member: dict = {}
    for r in masks_rows:
        cfg, extra = json.loads(r["variant_config"]), json.loads(r["extra"])
        assert cfg == {"sparsity": cfg["sparsity"], "init": "signed_constant"}  # levels only
        key = (extra["init_index"], extra["mask_index"])
        by_member.setdefault((r["member_index"], cfg["sparsity"]), {})[key] = r
    for reps in by_member.values():
        assert np.array_equal(reps[(0, 0)]["init_params"], reps[(0, 1)]["init_params"])
        assert np.array_equal(reps[(1, 0)]["init_params"], reps[(1, 1)]["init_params"])
        assert not np.array_equal(reps[(0, 0)]["init_params"], reps[(1, 0)]["init_params"])
        assert not np.array_equal(reps[(0, 0)]["mask"], reps[(0, 1)]["mask"])
    firsts = [reps[(0, 0)]["init_params"] for (m, s), reps in by_member.items() if s == 0.5]
    assert len({np.asarray(f).tobytes() for f in firsts}) == spec.members  # members get their own init


def test_rows_state_sparsity_mask_and_hyperparameters(masks_rows):
    for r in masks_rows:
        cfg, extra = json.loads(r["variant_config"]), json.loads(r["extra"])
        weights = [v for n, v in extra["layer_sparsity"].items()]
        assert weights == [cfg["sparsity"]] * 2  # 1280 and 200 weights: exact at 0.5 and 0.8
        assert r["sparsity"] == pytest.approx(cfg["sparsity"])
        assert r["nonzero_params"] == sum(r["mask"][:1280]) + sum(r["mask"][1300:1500])  # biases are 0
        assert all(r["mask"][1280:1300]) and all(r["mask"][1500:])  # biases never masked
        assert (r["lr"], r["momentum"], r["weight_decay"], r["optimizer"]) == (0.1, 0.9, 0.0005, "sgd")
        assert r["epochs"] == 2 and r["final"] and r["step"] == 2 * (1078 // 64)


def test_mixed_zoo_builds_identically_twice(mixed, tmp_path):
    variants = {r["variant"] for r in shard_rows(mixed)}
    assert variants == {"dense", "supermask", "neuron_pruned"}
    again = tmp_path / "again"
    build_zoo(mixed_spec(), again, progress=False)
    assert files_of(again) == files_of(mixed)


def test_edge_popup_beats_random_masks_on_the_same_init(tmp_path, digits):
    """SLTH needs width: 64-128-128-10 at 50% sparsity, 4 members, 10 epochs of score training."""
    spec = ZooSpec.from_dict(
        {
            **TINY_ZOO,
            "members": 4,
            "arch_options": {"hidden": [128, 128]},
            "variants": [{"name": "supermask", "options": {"sparsity": 0.5, "epochs": 10}}],
        }
    )
    build_zoo(spec, tmp_path / "z", progress=False)
    rows = store.read_zoo(tmp_path / "z").to_pylist()
    arch = architecture_from_config(rows[0]["architecture"], json.loads(rows[0]["arch_options"]))
    init = arch.unflatten(torch.tensor(np.stack([r["init_params"] for r in rows]), dtype=torch.float32))
    random_acc = []
    for seed in range(3):  # random layer-wise masks at the same sparsity over the same frozen inits
        masks = pruning.random_masks(
            pruning.prunable(arch, init), 0.5, [seed * 10 + i for i in range(4)], "layerwise"
        )
        acc = evaluate_stacked(arch.forward_stacked, pruning.apply_masks(init, masks), digits)["test_acc"]
        random_acc.append(acc.mean().item())
    popup = float(np.mean([r["test_acc"] for r in rows]))
    assert popup > 0.8 and popup > max(random_acc) + 0.5, (popup, random_acc)


# ---------------------------------------------------------------------------- bad options
@pytest.mark.parametrize(
    "options, field, problem",
    [
        ({"sparsity": 1.0}, "variants.supermask.sparsity", "must be in [0, 1), got 1.0"),
        ({"sparsity": [0.5, -0.1]}, "variants.supermask.sparsity", "must be in [0, 1)"),
        ({"sparsity": []}, "variants.supermask.sparsity", "empty list"),
        ({"init": "xavier"}, "variants.supermask.init", "one of signed_constant"),
        ({"masks_per_init": 0}, "variants.supermask.masks_per_init", "integer >= 1"),
        ({"inits_per_member": 1.5}, "variants.supermask.inits_per_member", "integer >= 1"),
        ({"epochs": True}, "variants.supermask.epochs", "integer >= 1 or null"),
        ({"lr": 0}, "variants.supermask.lr", "> 0"),
        ({"momentum": 1.0}, "variants.supermask.momentum", "in [0, 1)"),
        ({"prune_rate": 0.5}, "variants.supermask.prune_rate", "unknown option; valid: sparsity"),
    ],
)
def test_bad_options_raise_one_line_naming_the_field(options, field, problem):
    with pytest.raises(ConfigError) as e:
        build_variant("supermask", options)
    assert e.value.field == field and problem in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith(f"{field}: ")


def test_tags_are_unique_and_filesystem_safe():
    v = build_variant("supermask", {"sparsity": [0.5, 0.9], "init": ["normal", "signed_constant"]})
    tags = [v.tag(c, j, m) for c in v.configs() for j in (0, 1) for m in (0, 1)]
    assert len(set(tags)) == len(tags) == 16
    assert all(t.replace("-", "").replace("_", "").replace(".", "").isalnum() for t in tags)
