"""Pruning helpers and the magnitude / imp / random_prune variants."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch.nn.utils import prune

from mole.errors import ConfigError
from mole.nets import build_architecture
from mole.zoo import pruning, store
from mole.zoo.build import build_zoo, prepare
from mole.zoo.export import arch_from_row, module_from_row
from mole.zoo.plan import MemberPlan
from mole.zoo.spec import ZooSpec, plan_groups
from mole.zoo.variants import build_variant
from mole.zoo.variants.base import GroupContext
from mole.zoo.variants.imp import replay_to
from tests.conftest import TINY_ZOO
from tests.zoo.test_build import files_of

ARCHS = {"mlp": {"hidden": [32, 16]}, "cnn": {"channels": [4, 8], "hidden": [16]}}


def stacked(name: str, k: int = 3):
    arch = build_architecture(name, (1, 8, 8), 10, **ARCHS[name])
    return arch, arch.init_stacked([11 + i for i in range(k)])


def n_weights(arch) -> int:
    return sum(math.prod(arch.param_shapes()[n]) for n in arch.weight_names())


# ---------------------------------------------------------------------------- against torch.nn.utils.prune
@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.95])
def test_global_masks_equal_torch_global_unstructured(name, sparsity):
    arch, params = stacked(name)
    masks = pruning.magnitude_masks(pruning.prunable(arch, params), sparsity, "global")
    for i in range(3):
        module = arch.to_module(params, index=i)
        owners = {n: module.get_submodule(n.rsplit(".", 1)[0]) for n in arch.weight_names()}
        prune.global_unstructured(
            [(m, "weight") for m in owners.values()], pruning_method=prune.L1Unstructured, amount=sparsity
        )
        for n, m in owners.items():
            assert torch.equal(masks[n][i], m.weight_mask.bool()), n


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_layerwise_masks_equal_torch_l1_unstructured_per_layer(name):
    arch, params = stacked(name)
    masks = pruning.magnitude_masks(pruning.prunable(arch, params), 0.7, "layerwise")
    for i in range(3):
        module = arch.to_module(params, index=i)
        for n in arch.weight_names():
            layer = module.get_submodule(n.rsplit(".", 1)[0])
            prune.l1_unstructured(layer, "weight", amount=0.7)
            assert torch.equal(masks[n][i], layer.weight_mask.bool()), n


# ---------------------------------------------------------------------------- helpers
@pytest.mark.parametrize("scope", pruning.SCOPES)
@pytest.mark.parametrize("sparsity", [0.0, 0.33, 0.9, 0.999])
def test_exact_sparsity_binary_masks_and_zeros(scope, sparsity):
    arch, params = stacked("cnn")
    weights = pruning.prunable(arch, params)
    for masks in (
        pruning.magnitude_masks(weights, sparsity, scope),
        pruning.random_masks(weights, sparsity, [1, 2, 3], scope),
    ):
        if scope == "global":
            removed = pruning.n_removed(n_weights(arch), sparsity)
            assert pruning.sparsity_of(masks).tolist() == [removed / n_weights(arch)] * 3
        for n, m in masks.items():
            assert m.dtype == torch.bool and m.shape == params[n].shape
            if scope == "layerwise":
                assert ((~m).flatten(1).sum(1) == round(sparsity * m[0].numel())).all()
        masked = pruning.apply_masks(params, masks)
        for n, m in masks.items():
            assert (masked[n][~m] == 0).all() and torch.equal(masked[n][m], params[n][m])
        flat = pruning.full_mask(arch, masks)
        assert flat.shape == (3, arch.num_params) and flat.dtype == torch.bool
        biases = arch.flatten(
            {n: torch.full_like(p, n.endswith("bias"), dtype=torch.bool) for n, p in params.items()}
        )
        assert flat[biases].all()  # biases are never pruned


def test_sparsity_means_fraction_removed():
    arch, params = stacked("mlp")
    masks = pruning.magnitude_masks(pruning.prunable(arch, params), 0.9, "global")
    kept = sum(m.flatten(1).sum(1) for m in masks.values())
    assert (kept == n_weights(arch) - round(0.9 * n_weights(arch))).all()  # 10% kept, not 90%


def test_ties_still_remove_exactly_k():
    keep = pruning.lowest_removed(torch.zeros(4, 10), 3)
    assert (keep.sum(1) == 7).all()


def test_iterative_masks_are_nested_and_cannot_revive():
    arch, params = stacked("mlp")
    weights = pruning.prunable(arch, params)
    first = pruning.magnitude_masks(weights, 0.5, "global")
    # Weights changed since (as after retraining): the next round must still keep only survivors.
    moved = {n: w + torch.randn_like(w) for n, w in weights.items()}
    second = pruning.magnitude_masks(moved, 0.8, "global", current=first)
    assert all((second[n] <= first[n]).all() for n in first)
    assert pruning.sparsity_of(second).tolist() == [round(0.8 * n_weights(arch)) / n_weights(arch)] * 3
    with pytest.raises(ValueError, match="revive"):
        pruning.magnitude_masks(moved, 0.3, "global", current=first)


def test_random_masks_follow_member_seeds_and_nest():
    arch, params = stacked("mlp", k=3)
    weights = pruning.prunable(arch, params)
    a = pruning.random_masks(weights, 0.8, [5, 6, 7])
    b = pruning.random_masks({n: w[1:2] for n, w in weights.items()}, 0.8, [6])  # member 6 alone
    looser = pruning.random_masks(weights, 0.5, [5, 6, 7])
    for n in a:
        assert torch.equal(a[n][1:2], b[n])
        assert not torch.equal(a[n][0], a[n][1])
        assert (a[n] <= looser[n]).all()


def test_train_masked_holds_zeros_and_trains_the_rest(digits):
    arch = build_architecture("mlp", digits.input_shape, 10, hidden=[16])
    members = [MemberPlan(i, 40 + i, 0.1, 1e-3, 1.0, 0.9, 64, 1, "sgd") for i in range(2)]
    params = arch.init_stacked([m.seed for m in members])
    masks = pruning.magnitude_masks(pruning.prunable(arch, params), 0.7)
    out = pruning.train_masked(arch.forward_stacked, params, masks, digits, members, epochs=2)
    for n, m in masks.items():
        assert (out[n][~m] == 0).all() and not torch.equal(out[n][m], params[n][m])


# ---------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    "name,options,field,words",
    [
        ("magnitude", {"sparsity": 1.2}, "variants.magnitude.sparsity", "must be in [0, 1), got 1.2"),
        ("magnitude", {"sparsity": [0.5, 1.0]}, "variants.magnitude.sparsity", "got 1.0"),
        ("magnitude", {"sparsity": -0.1}, "variants.magnitude.sparsity", "[0, 1)"),
        ("magnitude", {"sparsity": []}, "variants.magnitude.sparsity", "empty"),
        ("magnitude", {"sparsity": [0.5, 0.5]}, "variants.magnitude.sparsity", "repeated"),
        ("magnitude", {"scope": "per_neuron"}, "variants.magnitude.scope", "unknown scope"),
        ("magnitude", {"finetune_epochs": -1}, "variants.magnitude.finetune_epochs", "non-negative"),
        ("magnitude", {"amount": 0.5}, "variants.magnitude.amount", "unknown option"),
        ("random_prune", {"sparsity": 1}, "variants.random_prune.sparsity", "[0, 1)"),
        ("random_prune", {"finetune_epochs": 1.5}, "variants.random_prune.finetune_epochs", "integer"),
        ("imp", {"rounds": 0}, "variants.imp.rounds", "positive"),
        ("imp", {"prune_fraction": 1.0}, "variants.imp.prune_fraction", "(0, 1)"),
        ("imp", {"target_sparsity": 1.5}, "variants.imp.target_sparsity", "(0, 1)"),
        ("imp", {"target_sparsity": 0.8, "prune_fraction": 0.2}, "variants.imp.target_sparsity", "not both"),
        ("imp", {"rewind_step": -5}, "variants.imp.rewind_step", "non-negative"),
        ("imp", {"sparsity": 0.8}, "variants.imp.sparsity", "unknown option"),
    ],
)
def test_bad_options_raise_one_line_config_error(name, options, field, words):
    with pytest.raises(ConfigError) as e:
        build_variant(name, options)
    assert e.value.field == field and words in str(e.value) and "\n" not in str(e.value)


def test_bad_options_fail_the_build_before_anything_is_written(tmp_path):
    spec = ZooSpec.from_dict(
        {**TINY_ZOO, "variants": ["dense", {"name": "magnitude", "options": {"sparsity": 1.2}}]}
    )
    with pytest.raises(ConfigError, match="variants.magnitude.sparsity"):
        build_zoo(spec, tmp_path / "z", progress=False)
    assert not (tmp_path / "z").exists()


def test_tags_are_unique_and_filesystem_safe():
    mag = build_variant(
        "magnitude", {"sparsity": [0.5, 0.9], "scope": ["global", "layerwise"], "finetune_epochs": [0, 2]}
    )
    imp = build_variant("imp", {"target_sparsity": 0.8, "rounds": 3, "rewind_step": 20})
    tags = [mag.tag(c) for c in mag.configs()] + [
        imp.tag({**imp.configs()[0], "round": r}) for r in (1, 2, 3)
    ]
    assert len(set(tags)) == len(tags) == 11
    assert all(t.replace("-", "").replace(".", "").replace("_", "").isalnum() for t in tags)
    assert imp.schedule()[-1] == pytest.approx(0.8)


# ---------------------------------------------------------------------------- zoos built with the variants
ALL_VARIANTS = [
    "dense",
    {
        "name": "magnitude",
        "options": {"sparsity": [0.5, 0.9], "scope": ["global", "layerwise"], "finetune_epochs": [0, 1]},
    },
    {
        "name": "imp",
        "options": {"rounds": 2, "prune_fraction": 0.5, "rewind_step": 5},
    },  # 5: not a kept snapshot
    {"name": "random_prune", "options": {"sparsity": 0.5, "finetune_epochs": [0, 1]}},
]


def pruned_spec() -> ZooSpec:
    return ZooSpec.from_dict({**TINY_ZOO, "members": 4, "group_size": 4, "variants": ALL_VARIANTS})


@pytest.fixture(scope="module")
def pruned_zoo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zoo") / "pruned"
    build_zoo(pruned_spec(), out, progress=False)
    return out


def test_zoo_has_rows_of_every_variant_with_masks(pruned_zoo, digits):
    rows = store.read_zoo(pruned_zoo).to_pylist()
    finals = [r for r in rows if r["final"]]
    count = {v: sum(r["variant"] == v for r in finals) for v in ("dense", "magnitude", "imp", "random_prune")}
    assert count == {"dense": 4, "magnitude": 4 * 8, "imp": 4 * 2, "random_prune": 4 * 2}
    arch = arch_from_row(rows[0])
    is_weight = arch.flatten(
        {
            n: torch.full((1, *s), n in arch.weight_names(), dtype=torch.bool)
            for n, s in arch.param_shapes().items()
        }
    )[0]
    for r in finals:
        if r["variant"] == "dense":
            continue
        mask, params = torch.tensor(r["mask"]), torch.tensor(r["params"])
        assert mask.shape == (r["num_params"],) and mask[~is_weight].all()
        assert (params[~mask] == 0).all()
        removed = int((~mask).sum())
        assert r["sparsity"] == removed / int(is_weight.sum())
        assert removed == round(json.loads(r["variant_config"])["sparsity"] * int(is_weight.sum()))
        module = module_from_row(r)
        with torch.no_grad():
            acc = (module(digits.x_test).argmax(1) == digits.y_test).double().mean().item()
        assert acc == pytest.approx(r["test_acc"], abs=1e-12)  # params are the effective weights


def test_one_shot_masks_come_from_the_shared_dense_run(pruned_zoo):
    rows = store.read_zoo(pruned_zoo).to_pylist()
    dense = {r["member_index"]: r for r in rows if r["variant"] == "dense" and r["final"]}
    for r in rows:
        config = json.loads(r["variant_config"])
        if r["variant"] != "magnitude" or config["finetune_epochs"] or config["scope"] != "global":
            continue
        arch = arch_from_row(r)
        trained = arch.unflatten(torch.tensor([dense[r["member_index"]]["params"]]))
        masks = pruning.magnitude_masks(pruning.prunable(arch, trained), config["sparsity"])
        assert torch.equal(pruning.full_mask(arch, masks)[0], torch.tensor(r["mask"]))


def test_imp_rows_carry_round_rewind_point_and_nested_masks(pruned_zoo, digits):
    rows = [r for r in store.read_zoo(pruned_zoo).to_pylist() if r["variant"] == "imp"]
    spec = pruned_spec()
    _, arch, _ = prepare(spec)
    ctx = GroupContext(spec, spec.spec_hash(), arch, digits, plan_groups(spec)[0])
    rewind = arch.flatten(replay_to(ctx, 5))  # (K, P)
    for m in range(4):
        mine = sorted(
            (r for r in rows if r["member_index"] == m),
            key=lambda r: json.loads(r["variant_config"])["round"],
        )
        assert [json.loads(r["extra"])["round"] for r in mine] == [1, 2]
        assert [r["sparsity"] for r in mine] == pytest.approx([0.5, 0.75], abs=1e-3)
        assert torch.equal(
            torch.tensor(mine[1]["mask"]) & ~torch.tensor(mine[0]["mask"]),
            torch.zeros(arch.num_params, dtype=torch.bool),
        )
        for r in mine:
            assert torch.equal(torch.tensor(r["init_params"]), rewind[m])
        assert len({r["member_id"] for r in mine}) == 2


def test_replay_to_is_the_dense_trajectory(digits):
    spec = ZooSpec.from_dict({**TINY_ZOO, "members": 2, "group_size": 2})
    _, arch, _ = prepare(spec)
    ctx = GroupContext(spec, spec.spec_hash(), arch, digits, plan_groups(spec)[0])
    kept = next(s for s in ctx.dense().snapshots if s.step == 20)
    replayed = replay_to(ctx, 20)
    assert all(torch.equal(replayed[n], kept.params[n]) for n in kept.params)


def test_same_config_twice_gives_identical_shards(pruned_zoo, tmp_path):
    again = tmp_path / "again"
    build_zoo(pruned_spec(), again, progress=False)
    assert files_of(again) == files_of(pruned_zoo)


def test_imp_beats_one_shot_magnitude_at_80_percent_without_finetuning(tmp_path):
    spec = ZooSpec.from_dict(
        {
            "name": "imp_vs_magnitude",
            "architecture": "mlp",
            "arch_options": {"hidden": [32, 32]},
            "variants": [
                {"name": "magnitude", "options": {"sparsity": 0.8}},
                {"name": "imp", "options": {"target_sparsity": 0.8, "rounds": 3}},
            ],
            "members": 6,
            "group_size": 6,
            "seed": 1,
            "hparams": {"lr": {"low": 0.02, "high": 0.1, "log": True}, "batch_size": [32], "epochs": [10]},
        }
    )
    build_zoo(spec, tmp_path / "z", progress=False)
    rows = store.read_zoo(tmp_path / "z").to_pylist()
    n = 64 * 32 + 32 * 32 + 32 * 10
    mag = [r for r in rows if r["variant"] == "magnitude"]
    imp = [r for r in rows if r["variant"] == "imp" and json.loads(r["extra"])["round"] == 3]
    assert len(mag) == len(imp) == 6
    assert {r["sparsity"] for r in mag + imp} == {round(0.8 * n) / n}  # both at exactly 80%
    mag_acc, imp_acc = (sum(r["test_acc"] for r in rs) / 6 for rs in (mag, imp))
    assert imp_acc >= mag_acc, (imp_acc, mag_acc)


# ---------------------------------------------------------------------------- the straight-through top-k
def test_topk_straight_through_removes_exactly_and_passes_gradients():
    scores = torch.tensor([[0.0, 0.0, 0.0, 0.0], [4.0, 1.0, 3.0, 2.0]], requires_grad=True)
    masks = pruning.topk_straight_through(scores, torch.tensor([0.5, 0.25]))
    assert masks.tolist() == [[0, 0, 1, 1], [1, 0, 1, 1]]  # ties broken by position, never all removed
    (masks * torch.arange(4.0)).sum().backward()
    assert scores.grad.tolist() == [[0, 1, 2, 3]] * 2  # d mask / d score = 1 (edge-popup)
    wide = torch.randn(3, 50, requires_grad=True) * 3.3
    assert set(pruning.topk_straight_through(wide, torch.tensor([0.3] * 3)).unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 0.95])
def test_topk_straight_through_counts_as_n_removed_whatever_the_ties(sparsity):
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 3, (4, 2, 15), generator=g).float()  # (K, 2, 15): heavy ties everywhere
    rows[0] = torch.randn(2, 15, generator=g)  # and one row without
    for given in (sparsity, torch.full((4,), sparsity)):  # one float for all rows, or one per row
        keep = pruning.topk_straight_through(rows, given)
        assert keep.shape == rows.shape and keep.dtype == rows.dtype
        assert ((1 - keep).flatten(1).sum(1) == pruning.n_removed(30, sparsity)).all()
        for k in range(4):  # kept scores are never below removed ones; of equal ones the later stay
            flat, kept = rows[k].flatten(), keep[k].flatten() > 0
            if kept.any() and (~kept).any():
                assert flat[kept].min() >= flat[~kept].max()
                cut = flat[kept].min()
                tied = (flat == cut).nonzero().flatten()
                assert kept[tied].tolist() == sorted(kept[tied].tolist())  # False ... False True ... True


@pytest.mark.parametrize("counts", [3, 12])  # a few sparsity levels (grouped thresholds), many (ranking)
def test_keep_highest_matches_a_stable_ranking_with_per_row_counts_and_ties(counts):
    g = torch.Generator().manual_seed(counts)
    scores = (torch.rand(40, 300, generator=g) * 6).round()  # 7 values: ties at every threshold
    scores[::4] = torch.rand(10, 300, generator=g)  # and some rows without ties
    drop = torch.randint(0, 301, (counts,), generator=g)[torch.randint(counts, (40,), generator=g)]
    rank = scores.argsort(dim=1, stable=True).argsort(dim=1)  # 0 for the lowest, earlier first among equals
    assert torch.equal(pruning._keep_highest(scores, drop), rank >= drop[:, None])


def test_topk_straight_through_per_row_counts_and_one_answer_per_path():
    scores = torch.arange(10.0).repeat(3, 1)  # (3, 10)
    keep = pruning.topk_straight_through(scores, torch.tensor([0.0, 0.5, 0.9]))  # per row: a group each
    assert keep.sum(1).tolist() == [10, 5, 1] and keep[2, 9] == 1
    assert torch.equal(pruning.topk_straight_through(scores, 0.0), torch.ones(3, 10))
    g = torch.Generator().manual_seed(1)
    random = torch.randn(6, 40, generator=g)
    one = pruning.topk_straight_through(random, 0.35)  # one count for all rows: the threshold
    mixed = pruning.topk_straight_through(
        torch.cat([random, torch.zeros(1, 40)]), torch.tensor([0.35] * 6 + [0.5])
    )  # counts differ: one group per count
    assert torch.equal(one, mixed[:6])
    want = pruning.masks_from_scores({"w": random}, 0.35, "layerwise")["w"]  # the non-differentiable masks
    assert torch.equal(one.bool(), want)
