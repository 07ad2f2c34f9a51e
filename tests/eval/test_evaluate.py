"""The registry and `evaluate`: result rows, loud errors, and rows as the zoo and generation write them."""

from __future__ import annotations

import json

import pytest
import torch

from mole.diffusion.generated import records
from mole.diffusion.project import project_members
from mole.errors import ConfigError
from mole.eval import EVALUATORS, EvalSet, build_evaluator, evaluate, load_rows
from mole.eval.base import rows_at
from mole.zoo import store
from tests.eval.helpers import member, row


def test_result_rows():
    rows = [row(member(i), {"test_acc": a}, test_acc=a, test_loss=1.0) for i, a in enumerate([0.5, 0.9])]
    out = evaluate(EvalSet(rows, label="generated"), {"accuracy": None, "prompt_alignment": {}})
    assert {
        "set": "generated",
        "evaluator": "prompt_alignment",
        "metric": "test_acc_mae",
        "value": 0.0,
    } in out
    assert {r["evaluator"] for r in out} == {"accuracy", "prompt_alignment"}
    assert all(isinstance(r["value"], float) for r in out)
    assert evaluate(EvalSet(rows), ["accuracy"]) == evaluate(EvalSet(rows), [build_evaluator("accuracy")])


def test_unknown_evaluator_lists_the_valid_names():
    with pytest.raises(ConfigError, match="unknown evaluator 'nolvety'; valid: accuracy, constraints, "):
        evaluate(EvalSet([]), ["nolvety"])
    assert EVALUATORS.names() == [
        "accuracy",
        "constraints",
        "diversity",
        "misprediction_iou",
        "novelty",
        "prompt_alignment",
        "time_to_network",
    ]


@pytest.mark.parametrize(
    "name, options, field",
    [
        ("novelty", {"treshold": 0.9}, "eval.novelty.treshold"),
        ("novelty", {"threshold": 2.0}, "eval.novelty.threshold"),
        ("novelty", {"align": "hungarian"}, "eval.novelty.align"),
        ("diversity", {"align": None}, "eval.diversity.align"),
        ("accuracy", {"recompute": "yes"}, "eval.accuracy.recompute"),
        ("constraints", {"strict": True}, "eval.constraints.strict"),
    ],
)
def test_bad_option_names_the_field(name, options, field):
    with pytest.raises(ConfigError) as e:
        evaluate(EvalSet([]), {name: options})
    assert e.value.field == field


def test_rows_through_a_zoo_folder(tmp_path):
    """Arrow rows as mole.zoo.store writes them and generated rows as mole.diffusion.generated makes them."""
    prompts = [{"sparsity": 0.5, "bits": 4, "test_acc": 0.9}, {"sparsity": 0.5, "bits": 4, "test_acc": 0.6}]
    members = project_members([member(0), member(1)], sparsity=0.5, bits=4)
    for m, p in zip(members, prompts):
        m.extra = {"prompt": p}
    metrics = {k: torch.tensor([0.9, 0.5]) for k in store.METRIC_COLUMNS}
    recs = records(members, metrics, {"seed": 0}, "gen", "toy", {})
    entry = store.write_shard(tmp_path / "shards" / store.shard_name(0), recs)
    store.record_shard(tmp_path, 0, entry, "synthetic", 1)
    rows = load_rows(tmp_path)
    assert json.loads(rows[0]["extra"])["prompt"] == prompts[0]
    out = {
        r["metric"]: r["value"]
        for r in evaluate(EvalSet(store.read_zoo(tmp_path)), ["constraints", "prompt_alignment"])
    }
    assert out["frac_sparsity_met"] == out["frac_bits_met"] == 1.0
    assert out["test_acc_mae"] == pytest.approx(0.05)
    assert out["bits_mae"] == 0.0
    assert out["sparsity_mae"] == pytest.approx(0.5 - 70 / 141)  # round(0.5 * 141) = 70 removed


def test_rows_filtered_in_arrow_and_fetched_whole_later(tmp_path):
    members = [member(0), member(1), member(2)]
    metrics = {k: torch.tensor([0.9, 0.5, 0.7]) for k in store.METRIC_COLUMNS}
    recs = records(members, metrics, {"seed": 0}, "gen", "toy", {})
    recs[1]["final"] = False  # a snapshot along a run
    entry = store.write_shard(tmp_path / "shards" / store.shard_name(0), recs)
    store.record_shard(tmp_path, 0, entry, "synthetic", 1)
    every = store.read_zoo(tmp_path).to_pylist()
    assert load_rows(tmp_path, final_only=False) == every
    assert load_rows(tmp_path) == [every[0], every[2]]
    light = load_rows(tmp_path, final_only=False, tensors=False)
    assert [r["row"] for r in light] == [0, 1, 2] and not {"params", "mask", "factors"} & set(light[0])
    assert rows_at(tmp_path, [light[2], light[1]]) == [every[2], every[1]]
    finals = load_rows(tmp_path, tensors=False)  # positions in the whole zoo, not among its final rows
    assert [r["row"] for r in finals] == [0, 2] and rows_at(tmp_path, finals) == [every[0], every[2]]
    mixed = load_rows(tmp_path, final_only=False, tensors="final")  # a reference zoo for the report
    assert mixed == [every[0], light[1], every[2]]
    assert load_rows(tmp_path, tensors="final") == [every[0], every[2]]
    with pytest.raises(ValueError, match="tensors: got 'all'"):
        load_rows(tmp_path, tensors="all")


def test_member_snapshots_keeps_finals_and_the_steps_every_member_shares(tmp_path):
    """The pruning baselines' input: random snapshot steps share only the init, so only it is fetched."""
    from mole.pipeline import member_snapshots

    members = [member(i) for i in range(7)]
    metrics = {k: torch.full((7,), 0.5) for k in store.METRIC_COLUMNS}
    recs = records(members, metrics, {"seed": 0}, "gen", "toy", {})
    layout = [("a", 0, False), ("a", 5, False), ("a", 10, True), ("b", 0, False), ("b", 7, False),
              ("b", 10, True), ("c", 10, True)]  # fmt: skip
    for rec, (name, step, final) in zip(recs, layout):
        rec.update(member_id=name, step=step, final=final)
    entry = store.write_shard(tmp_path / "shards" / store.shard_name(0), recs)
    store.record_shard(tmp_path, 0, entry, "synthetic", 1)
    every = store.read_zoo(tmp_path).to_pylist()
    finals = [r for r in every if r["final"] and r["member_id"] in "ab"]
    assert member_snapshots(tmp_path, finals) == [every[0], every[2], every[3], every[5]]
    assert member_snapshots(tmp_path, finals[:1]) == every[:3]  # one member shares all its steps
