"""scripts/bench_zoo.py and scripts/bench_zoo_build.py on tiny work: every way trains the same members."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mole.nets import build_architecture
from mole.zoo.spec import ZooSpec
from tests.conftest import TINY_ZOO

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_every_way_trains_the_same_members(tmp_path):
    bench = load("bench_zoo")
    out = tmp_path / "b1.json"
    argv = ["--out", str(out), "--members", "3", "--epochs", "1", "--threads", "1", "--processes", "2"]
    res = bench.main([*argv, "--repeats", "2"])
    assert json.loads(out.read_text())["summary"] == json.loads(json.dumps(res["summary"]))
    assert len(res["repeats"]) == 2 and set(res["repeats"][0]) == {"mlp", "cnn"}
    for name, tolerance in (("mlp", 1e-12), ("cnn", 1.0)):  # the CNN sums its convolutions in another order
        ways = res["repeats"][0][name]["ways"]
        assert set(ways) == {
            "stacked 1t",
            "stacked 2p x 1t",
            "one by one 2p x 1t",
            "one by one 1t",
            "vmap 1t",
        }
        assert all(w["complete"] and w["seconds"] > 0 and w["gflops"] > 0 for w in ways.values())
        accs = [w["acc_mean"] for w in ways.values()]
        assert max(accs) - min(accs) <= tolerance / 100 + 1e-12
        assert res["summary"][name]["acc_within_points"] <= tolerance
    only = res["repeats"][0]["mlp"]["matmuls_only"]["1t"]  # the MLP step's matmuls alone: its ceiling
    assert only["seconds"] > 0 and 0 < only["peak_fraction"]
    fractions = [r["mlp"]["matmuls_only"]["1t"]["peak_fraction"] for r in res["repeats"]]
    assert res["summary"]["mlp"]["matmuls_only_peak_fraction"] == pytest.approx(
        sum(fractions) / 2
    )  # median of 2
    assert "matmuls_only" not in res["repeats"][0]["cnn"]


@pytest.mark.slow
def test_a_way_past_its_budget_is_extrapolated_and_marked(tmp_path):
    bench = load("bench_zoo")
    argv = ["--out", str(tmp_path / "b1.json"), "--arch", "mlp", "--members", "2", "--epochs", "2"]
    res = bench.main([*argv, "--threads", "1", "--processes", "2", "--budget", "0"])
    ways = res["repeats"][0]["mlp"]["ways"]
    for way in ("stacked 1t", "one by one 1t", "vmap 1t"):  # each stops after its first step or member
        assert not ways[way]["complete"], way
        assert ways[way]["seconds"] > 0
    assert ways["one by one 1t"]["members_scored"] == 1 and ways["vmap 1t"]["acc_mean"] is None
    # accuracy is compared over the ways that finished (here the 2-process ways, one member each)
    assert res["summary"]["mlp"]["acc_within_points"] == 0.0


def test_training_flops_count_every_layer():
    bench = load("bench_zoo")
    mlp = build_architecture("mlp", (1, 8, 8), 10, hidden=[32, 32])
    assert bench.forward_macs(mlp) == 64 * 32 + 32 * 32 + 32 * 10
    cnn = build_architecture("cnn", (1, 8, 8), 10, channels=[8, 16], kernel_size=3, hidden=[32])
    assert bench.forward_macs(cnn) == 64 * 8 * 9 + 16 * 16 * 8 * 9 + 64 * 32 + 32 * 10  # 8x8, then 4x4 maps
    signal = build_architecture("cnn", (1, 40), 10, channels=[4], kernel_size=5, hidden=[])
    assert bench.forward_macs(signal) == 40 * 4 * 5 + 80 * 10
    assert (
        bench.training_flops(mlp, k=2, batch_size=4, steps=3) == 3 * 2 * 4 * bench.forward_macs(mlp) * 2 * 3
    )


def test_member_steps_count_the_dense_run_and_the_variants():
    build_bench = load("bench_zoo_build")
    spec = ZooSpec.from_dict(TINY_ZOO)  # 6 members, batch 64, 2 epochs on digits' 1078 training examples
    dense, total = build_bench.member_steps(spec)
    assert dense == total == 6 * 2 * (1078 // 64)
    imp = ZooSpec.from_dict({**TINY_ZOO, "variants": ["dense", {"name": "imp", "options": {"rounds": 2}}]})
    dense_imp, total_imp = build_bench.member_steps(imp)
    assert dense_imp == dense and total_imp > dense


@pytest.mark.slow
def test_the_build_bench_times_each_setting(tmp_path):
    spec, out = tmp_path / "tiny.yaml", tmp_path / "b.json"
    spec.write_text(json.dumps(TINY_ZOO))  # JSON is YAML
    cmd = [sys.executable, str(SCRIPTS / "bench_zoo_build.py"), "--out", str(out), "--spec", str(spec)]
    r = subprocess.run([*cmd, "--processes", "1", "2", "--threads", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr  # a script: its builds run in spawned processes that import it
    rows = json.loads(out.read_text())["builds"]
    assert [row["processes"] for row in rows] == [1, 2]
    assert all(
        row["seconds"] > 0 and row["peak_mb"] > 0 and row["member_steps"] == 6 * 2 * 16 for row in rows
    )
    assert rows[0]["worker_peak_mb"] < rows[1]["worker_peak_mb"]  # only the 2-process build has workers


def test_the_summary_says_not_measured_when_no_one_by_one_way_finished():
    bench = load("bench_zoo")

    def way(seconds, complete, acc):
        return {"seconds": seconds, "complete": complete, "acc_mean": acc if complete else None}

    ways = {
        "stacked 1t": way(2.0, True, 0.9),
        "one by one 1t": way(20.0, False, 0.9),
        "vmap 1t": way(4.0, True, 0.9),
    }
    rep = {"ways": ways, "flops": 1e9, "matmul_peak_gflops": 10.0}
    s = bench.summarise("cnn", [rep])
    assert s["vs_one_by_one"] == 10.0 and s["vs_vmap"] == 2.0 and s["peak_fraction"] == 0.05
    assert s["acc_within_points"] is None and s["met"] == {"vs_one_by_one": True, "acc_within_points": None}
