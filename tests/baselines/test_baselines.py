"""Baselines: rows of the zoo SCHEMA at exactly the requested sparsity, reuse of the zoo's pruning code, the zoo folder."""

import json
import math

import numpy as np
import pytest
import torch

from mole.baselines import BASELINES, build_baseline, run_baselines
from mole.baselines.base import member_groups
from mole.errors import ConfigError, StoreError
from mole.nets import architecture_from_config
from mole.tokenizer import MemberTensors
from mole.zoo import pruning, store
from tests.baselines.conftest import IMP

FAST = {  # one level each, short training: the whole folder stays well under a minute
    "magnitude": {"sparsity": [0.5, 0.9], "scope": ["global", "layerwise"]},
    "random": {"sparsity": [0.5, 0.9]},
    "imp": IMP,
    "edge_popup": {"sparsity": [0.5, 0.9], "epochs": 2},
    "lsq_supermask": {"sparsity": [0.5, 0.9], "inputs": 256},
}
TENSORS = ("params", "mask", "init_params", "codes", "scales", "factors")


def weight_masks(row: dict) -> dict[str, torch.Tensor]:
    member = MemberTensors.from_row(row)
    return {n: member.mask[n] for n in member.arch.weight_names()}


def same_rows(a: dict, b: dict, skip=()) -> list[str]:
    """Columns where two rows differ (tensor columns compared exactly)."""
    out = []
    for col in store.SCHEMA.names:
        if col in skip:
            continue
        x, y = a.get(col), b.get(col)
        if col in TENSORS:
            if (x is None) != (y is None) or (
                x is not None and not np.array_equal(np.asarray(x), np.asarray(y))
            ):
                out.append(col)
        elif x != y:
            out.append(col)
    return out


@pytest.fixture(scope="module")
def outputs(dense_rows, digits) -> dict[str, list[dict]]:
    return {
        name: run_baselines(dense_rows, digits, {name: opts}, group_size=4) for name, opts in FAST.items()
    }


# ---------------------------------------------------------------------------- rows
@pytest.mark.parametrize("name", list(FAST))
def test_rows_have_the_schema_and_exactly_the_requested_sparsity(name, outputs, dense_rows):
    rows = outputs[name]
    levels = len(BASELINES[name](**FAST[name]).configs()) * (IMP["rounds"] if name == "imp" else 1)
    assert len(rows) == levels * len(dense_rows)
    store.records_to_table(rows)  # every column fits the SCHEMA
    for row in rows:
        assert set(row) <= set(store.SCHEMA.names) and row["variant"] == name and row["final"]
        config = json.loads(row["variant_config"])
        masks = weight_masks(row)
        counts = {n: (int((~m).sum()), m.numel()) for n, m in masks.items()}
        if (
            name in ("edge_popup", "lsq_supermask") or config.get("scope") == "layerwise"
        ):  # every tensor at the sparsity
            assert all(removed == round(config["sparsity"] * size) for removed, size in counts.values())
        else:  # one global ranking: round(s * n) of all n weights
            total = sum(size for _, size in counts.values())
            assert sum(r for r, _ in counts.values()) == round(config["sparsity"] * total)
            assert row["sparsity"] == round(config["sparsity"] * total) / total
        member = MemberTensors.from_row(row)
        for n, m in masks.items():
            assert (member.params[n][~m] == 0).all()  # params are the effective (masked) weights
        back = member.to_row()
        for col in ("params", "mask", "init_params"):
            assert (row[col] is None) == (back[col] is None)
            if row[col] is not None:
                assert np.array_equal(np.asarray(row[col]), back[col])
        arch = architecture_from_config(row["architecture"], json.loads(row["arch_options"]))
        assert 0 <= row["test_acc"] <= 1 and arch.num_params == row["num_params"]
    assert len({r["member_id"] for r in rows}) == len(rows)


def test_metrics_are_recomputed_on_the_given_data(outputs, digits):
    from mole.zoo.train import evaluate_stacked

    row = outputs["random"][0]
    member = MemberTensors.from_row(row)
    params = {n: p[None] for n, p in member.params.items()}
    acc = evaluate_stacked(member.arch.forward_stacked, params, digits)["test_acc"]
    assert float(acc[0]) == row["test_acc"]


def test_written_folder_reloads_and_a_rerun_reuses_it(tmp_path, dense_rows, digits):
    out = tmp_path / "baselines"
    options = {"magnitude": {"sparsity": 0.8}, "random": {"sparsity": 0.8}}
    rows = run_baselines(dense_rows, digits, options, out=out, group_size=4)
    store.verify_zoo(out)
    spec = store.read_json(out / store.SPEC, "spec")
    assert spec["spec"]["baselines"]["baselines"] == options
    reloaded = store.read_zoo(out).to_pylist()
    assert [r["member_id"] for r in reloaded] == [r["member_id"] for r in rows]
    for a, b in zip(rows, reloaded):
        assert same_rows(a, b) == []
        MemberTensors.from_row(b)
    shard = next((out / "shards").iterdir())
    mtime = shard.stat().st_mtime_ns
    again = run_baselines(dense_rows, digits, options, out=out, group_size=4)  # read back, not recomputed
    assert shard.stat().st_mtime_ns == mtime and len(again) == len(rows)
    with pytest.raises(StoreError, match="holds another zoo or baseline run"):
        run_baselines(dense_rows, digits, {"magnitude": {"sparsity": 0.5}}, out=out)
    assert not list(out.glob("**/*.tmp"))


# ---------------------------------------------------------------------------- reuse of the zoo's code
@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_magnitude_masks_are_the_zoo_pruning_masks(scope, outputs, dense_rows):
    members = [MemberTensors.from_row(r) for r in sorted(dense_rows, key=lambda r: r["member_index"])]
    arch = members[0].arch
    params = {n: torch.stack([m.params[n] for m in members]) for n in arch.param_shapes()}  # (K, ...)
    for s in (0.5, 0.9):
        expected = pruning.full_mask(arch, pruning.magnitude_masks(pruning.prunable(arch, params), s, scope))
        rows = [
            r for r in outputs["magnitude"]
            if json.loads(r["variant_config"]) == {"scope": scope, "sparsity": s, "finetune_epochs": 0}
        ]  # fmt: skip
        got = torch.stack(
            [torch.as_tensor(np.asarray(r["mask"])) for r in sorted(rows, key=lambda r: r["member_index"])]
        )
        assert torch.equal(got, expected)


def test_imp_rows_equal_the_zoo_imp_variant_rows(outputs, zoo_rows):
    """Same members, config and stacks (group_size 4 = the zoo's): every column equal but the member id's run hash."""
    zoo_imp = {(r["member_index"], r["variant_config"]): r for r in zoo_rows if r["variant"] == "imp"}
    ours = {(r["member_index"], r["variant_config"]): r for r in outputs["imp"]}
    assert set(ours) == set(zoo_imp) and len(ours) == 6 * IMP["rounds"]
    for key, row in ours.items():
        assert same_rows(row, zoo_imp[key], skip=("member_id",)) == []
        a, b = row["member_id"].split("-"), zoo_imp[key]["member_id"].split("-")
        assert a[0] == b[0] and a[2:] == b[2:] and a[1] != b[1]  # zoo name, index and tag; another run hash


def test_imp_rewinds_to_stored_step0_rows_like_to_redrawn_inits(zoo_rows, outputs, digits):
    trajectory = [r for r in zoo_rows if r["variant"] == "dense"]  # every snapshot: step 0 is the init
    assert {r["step"] for r in trajectory} >= {0, 32}
    rows = run_baselines(trajectory, digits, {"imp": IMP}, group_size=4)
    ours = {(r["member_index"], r["variant_config"]): r for r in outputs["imp"]}
    for row in rows:
        assert same_rows(row, ours[row["member_index"], row["variant_config"]], skip=("member_id",)) == []


def test_stacks_follow_the_zoo_groups(dense_rows):
    groups = member_groups(dense_rows, 4)
    assert [len(g) for g in groups] == [4, 2]
    assert [m[-1]["member_index"] for g in groups for m in g] == list(range(6))


def test_edge_popup_masks_beat_random_masks_on_the_same_weights(dense_rows, digits):
    rows = run_baselines(dense_rows, digits, {"edge_popup": {"sparsity": 0.5, "epochs": 10}}, group_size=4)
    learned = np.array([r["test_acc"] for r in rows])
    random = np.array([json.loads(r["extra"])["random_mask_test_acc"] for r in rows])
    assert learned.mean() > 0.7 and random.mean() < 0.2 and (learned > random + 0.4).all()
    # the rows hold their frozen init: training masks over them (given inits) keeps that init
    again = run_baselines(rows, digits, {"edge_popup": {"sparsity": 0.8, "epochs": 2}}, group_size=4)
    by_index = {r["member_index"]: r for r in rows}
    for row in again:
        assert json.loads(row["variant_config"]) == {"sparsity": 0.8, "init": "given"}
        assert np.array_equal(
            np.asarray(row["init_params"]), np.asarray(by_index[row["member_index"]]["init_params"])
        )
        masks = weight_masks(row)
        assert all(int((~m).sum()) == round(0.8 * m.numel()) for m in masks.values())


def test_the_construction_masks_the_inits_edge_popup_trains_and_beats_random_masks(outputs, digits):
    """lsq_supermask draws each member's frozen init as edge-popup does, or takes the given one."""
    popup = {
        (r["member_index"], json.loads(r["variant_config"])["sparsity"]): r for r in outputs["edge_popup"]
    }
    built = outputs["lsq_supermask"]
    for row in built:
        twin = popup[(row["member_index"], json.loads(row["variant_config"])["sparsity"])]
        assert np.array_equal(np.asarray(row["init_params"]), np.asarray(twin["init_params"]))
        extra = json.loads(row["extra"])
        assert extra["init_seed"] == json.loads(twin["extra"])["init_seed"] and extra["mask_seconds"] > 0
    half = [r for r in built if json.loads(r["variant_config"])["sparsity"] == 0.5]
    acc = np.array([r["test_acc"] for r in half])
    random = np.array([json.loads(r["extra"])["random_mask_test_acc"] for r in half])
    # 64-16-10 MLPs: measured 0.47 (0.21-0.69) against 0.10
    assert acc.mean() > random.mean() + 0.2 and (acc > random).all()
    given = run_baselines(half, digits, {"lsq_supermask": {"sparsity": 0.8, "inputs": 256}}, group_size=4)
    by_index = {r["member_index"]: r for r in half}
    for row in given:
        assert json.loads(row["variant_config"]) == {"sparsity": 0.8, "init": "given"}
        assert np.array_equal(
            np.asarray(row["init_params"]), np.asarray(by_index[row["member_index"]]["init_params"])
        )
        assert all(int((~m).sum()) == round(0.8 * m.numel()) for m in weight_masks(row).values())


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "name, options, field, message",
    [
        ("magnitude", {"sparsity": 1.5}, "baselines.magnitude.sparsity", "must be in [0, 1)"),
        (
            "magnitude",
            {"amount": 0.5},
            "baselines.magnitude.amount",
            "unknown option; valid: sparsity, scope",
        ),
        ("magnitude", {"group_size": 0}, "baselines.magnitude.group_size", "positive integer"),
        ("random", {"scope": "neurons"}, "baselines.random.scope", "unknown scope"),
        ("imp", {"prune_fraction": 0}, "baselines.imp.prune_fraction", "must be in (0, 1)"),
        ("imp", {"rounds": 0}, "baselines.imp.rounds", "positive integer"),
        (
            "edge_popup",
            {"prune_rate": 0.5},
            "baselines.edge_popup.prune_rate",
            "unknown option; valid: sparsity",
        ),
        ("edge_popup", {"lr": -1}, "baselines.edge_popup.lr", "a number > 0"),
        ("lsq_supermask", {"sparsity": 1.0}, "baselines.lsq_supermask.sparsity", "must be in [0, 1)"),
        ("lsq_supermask", {"init": "ones"}, "baselines.lsq_supermask.init", "must be one of signed_constant"),
        ("lsq_supermask", {"passes": 0}, "baselines.lsq_supermask.passes", "positive integer"),
        ("lsq_supermask", {"ridge": 0}, "baselines.lsq_supermask.ridge", "a number > 0"),
        ("lsq_supermask", {"lambda": 1}, "baselines.lsq_supermask.lambda", "unknown option; valid: sparsity"),
        ("subset_sum", {"n": 41}, "baselines.subset_sum.n", "exact subset-sum solver's limit"),
        ("subset_sum", {"target_range": 2}, "baselines.subset_sum.target_range", "must be in (0, 1]"),
        ("subset_sum", {"k": 1}, "baselines.subset_sum.k", "unknown option; valid: n, seed"),
    ],
)
def test_bad_options_name_the_field(name, options, field, message):
    with pytest.raises(ConfigError) as e:
        build_baseline(name, options)
    assert e.value.field == field and str(e.value).startswith(f"{field}: ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_inputs_name_the_field(dense_rows, digits):
    with pytest.raises(ConfigError, match=r"^baselines: unknown baseline 'lottery'; valid: edge_popup, imp"):
        build_baseline("lottery")
    digits_other = type(digits)(**{**digits.__dict__, "name": "mnist"})
    with pytest.raises(ConfigError, match=r"^task: member .* is a digits network, the data is mnist"):
        run_baselines(dense_rows, digits_other, {"magnitude": {"sparsity": 0.5}})
    bare = [{**r, "seed": None, "init_scale": None} for r in dense_rows]  # e.g. generated rows
    with pytest.raises(ConfigError, match=r"^baselines.imp.members: member .* no seed / init_scale"):
        run_baselines(bare, digits, {"imp": IMP})
    with pytest.raises(ConfigError, match=r"^members: no members given"):
        run_baselines([], digits, {"random": {}})
    with pytest.raises(ConfigError, match=r"^baselines.edge_popup.inits_per_member: must be 1"):
        given = [{**r, "init_params": r["params"]} for r in dense_rows]
        run_baselines(given, digits, {"edge_popup": {"inits_per_member": 2, "epochs": 1}})


def test_sparsity_levels_are_fractions_removed(outputs):
    """0.9 keeps 10% (edge-popup's prune-rate convention would keep 90%)."""
    for name in ("magnitude", "random", "edge_popup", "lsq_supermask"):
        rows = [r for r in outputs[name] if json.loads(r["variant_config"])["sparsity"] == 0.9]
        for r in rows:
            kept = sum(int(m.sum()) for m in weight_masks(r).values())
            total = sum(m.numel() for m in weight_masks(r).values())
            assert math.isclose(kept / total, 0.1, abs_tol=0.01)
