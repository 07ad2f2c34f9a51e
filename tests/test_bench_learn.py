"""`mole bench learn` (B9) end to end on a tiny zoo and a few training steps (every figure is written), and
its nearest-training-member stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mole.bench.learn import nearest_members, run_learn, summarise
from mole.cli import main
from mole.diffusion.update import Start
from mole.errors import ConfigError
from mole.eval import learn
from mole.tokenizer.canonical import match_order
from tests.conftest import TINY_ZOO
from tests.eval.helpers import member

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # builds a zoo, trains 10 steps, updates 8 starts 4 times
@pytest.mark.parametrize("recipe", ["digits_mlp_pairs.yaml", "digits_mlp_pairs_canonical.yaml"])
def test_bench_learn_writes_every_b9_figure(tmp_path, capsys, recipe):
    """Both recipes: G.pt's plain pairs, and B9's default (canonical order, self-conditioned)."""
    spec = {**TINY_ZOO, "members": 16, "group_size": 16, "snapshots": {"random": 6, "include_init": True}}
    (tmp_path / "zoo.yaml").write_text(yaml.safe_dump(spec))
    config = yaml.safe_load((ROOT / "configs" / "ltl" / recipe).read_text())
    config["trainer"].update(max_steps=10, val_check_interval=10)
    config["data"]["fractions"] = [0.5, 0.25, 0.25]
    (tmp_path / "pairs.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    argv = ["bench", "learn", "--zoo", str(tmp_path / "zoo.yaml"), "--model", str(tmp_path / "pairs.yaml"),
            "--out", str(out), "--inits", "4", "--mids", "4", "--prompts", "2",
            "--sgd_steps", "40", "--sgd_every", "10"]  # fmt: skip
    plain = recipe == "digits_mlp_pairs.yaml"  # the plain recipe samples at the defaults
    if not plain:
        argv += ["--steps", "2", "--guidance", "2", "--guidance_interval", "[500, 999]",
                 "--timestep_spacing", "leading"]  # fmt: skip
    assert main(argv) == 0
    assert "| init | 1 |" in capsys.readouterr().out
    result = json.loads((out / "learn.json").read_text())
    got = {k: result["sample"][k] for k in ("steps", "timestep_spacing", "guidance", "guidance_interval")}
    if plain:  # one trailing step, conditional only: the default (ledger L37)
        assert got == {"steps": 1, "timestep_spacing": "trailing", "guidance": 1.0, "guidance_interval": None}
    else:  # every option given is recorded; guidance at high noise only
        assert got == {
            "steps": 2,
            "timestep_spacing": "leading",
            "guidance": 2.0,
            "guidance_interval": [500, 999],
        }
    denoiser = json.loads((out / "train" / "model" / "denoiser" / "config.json").read_text())
    assert denoiser["self_condition"] == (recipe == "digits_mlp_pairs_canonical.yaml")
    assert set(result["summary"]) == {f"{k}/K={n}" for k in ("init", "mid", "mid_good") for n in (1, 2, 4)}
    assert set(result["targets"]) == {
        "init_loss_rel_error", "init_acc_mae", "init_loss_spearman", "sgd_steps", "init_K_not_worse",
        "mid_K_not_worse", "good_start_closer_than_any_member",
    }  # fmt: skip
    records = [r for r in result["records"] if r["kind"] != "mid_good"]
    assert len(records) == 8 * 2 * 3  # starts x prompts x K
    assert len({r["start"] for r in records if r["kind"] == "init"}) == 4
    assert all(r["start"].startswith("init:") for r in records if r["kind"] == "init")
    assert all(Path(p).is_file() for p in result["plots"])
    with pytest.raises(ConfigError, match="^mids: only"):
        run_learn(
            str(tmp_path / "zoo.yaml"), str(tmp_path / "pairs.yaml"), out, inits=1, mids=10**4, prompts=2
        )


def test_closeness_is_also_reported_over_the_prompts_that_ask_for_training():
    def record(prompt, start, moved):  # nearest member always at distance 1
        return {"kind": "mid_good", "update": 1, "prompt_loss": prompt, "start_loss": start, "moved": moved,
                "nearest_member": 1.0, "test_loss": prompt, "prompt_acc": 0.5, "test_acc": 0.5, "sgd_steps": 0}  # fmt: skip

    rows = [record(0.5, 1.0, 0.2), record(1.0, 1.0, 0.4), record(2.0, 1.0, 3.0), record(3.0, 1.0, 0.9)]
    (s,) = summarise(rows, ["mid_good"], [1]).values()
    assert s["closer_to_start_share"] == 0.75  # three of four moved less than the nearest member
    assert s["closer_to_start_share_improving"] == 1.0  # both prompts at or below the start's loss
    (s,) = summarise(rows[2:], ["mid_good"], [1]).values()
    assert s["closer_to_start_share_improving"] is None  # no prompt asked for training


def test_a_bad_guidance_interval_is_a_one_line_error_before_anything_is_written(tmp_path, capsys):
    assert main(["bench", "learn", "--out", str(tmp_path / "run"), "--guidance_interval", "[9, 1]"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "mole: error: guidance_interval: must be two timesteps [lo, hi] with 0 <= lo <= hi, got (9, 1)\n"
    )
    assert not (tmp_path / "run").exists()


def test_nearest_members_match_every_final_to_each_outputs_own_start():
    finals = [member(10), member(11), member(12)]
    starts = [Start(member(0), "a"), Start(member(1), "b")]
    # two outputs per start; the first of start 1 is final 2 matched to start 1: what its bank holds
    copy = match_order(finals[2], starts[1].member.params)[0]
    outputs = {1: [member(20), member(21), copy, member(22)], 2: [member(k) for k in range(30, 34)]}
    steps = []
    near = nearest_members(finals, starts, outputs, on_step=lambda done, total: steps.append((done, total)))
    assert near[1][2] == pytest.approx(0.0, abs=1e-5)
    for k, outs in outputs.items():
        for j, out in enumerate(outs):  # one bank per output, as each start's is built
            assert near[k][j] == learn.nearest(out, learn.aligned_bank(finals, starts[j // 2].member))[0]
    assert near[1][0] > 1.0 and steps == [(1, 2), (2, 2)]
