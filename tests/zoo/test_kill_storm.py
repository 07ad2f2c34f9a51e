"""A storm of SIGKILLs at seeded random instants of `mole zoo build`: every rerun resumes, and the zoo
it ends with is byte-identical to an unkilled build, nothing lost or duplicated."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mole.zoo import store
from tests.conftest import TINY_ZOO, write_spec
from tests.zoo.test_build import REPO, files_of

# ~15 subprocess builds, ~1.5 min on 2 idle cores; the timeout leaves room for a busy machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

KILLS = 10
# 8 groups of one member: 8 shards, so kills land before, between and inside shard writes
SPEC = {"members": 8, "group_size": 1, "hparams": {**TINY_ZOO["hparams"], "epochs": [3]}}


def build(cfg: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "mole", "zoo", "build", str(cfg), "--out", str(out), "--progress", "false"]


def start(cmd: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(cmd: list[str]) -> None:
    proc = start(cmd)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


def test_random_kill_storm_then_rerun_equals_an_unkilled_build(tmp_path):
    cfg = write_spec(tmp_path / "storm.yaml", **SPEC)
    clean = tmp_path / "clean"
    t0 = time.perf_counter()
    proc = start(build(cfg, clean))
    while not clean.exists() and proc.poll() is None:  # when the build starts writing (after imports)
        time.sleep(0.005)
    t_folder = time.perf_counter() - t0
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    t_full = time.perf_counter() - t0
    expected = files_of(clean)
    n_shards = len(store.load_manifest(clean)["shards"])
    assert n_shards == 8

    # Kill instants: from just before the folder appears to 40% into the build, so each killed run
    # gets only part of the way and one folder takes several kills before a run finishes it.
    lo, hi = 0.7 * t_folder, t_folder + 0.4 * (t_full - t_folder)
    rng = random.Random(22)
    landed, states, storm = 0, [], 0
    while landed < KILLS:
        out = tmp_path / f"storm{storm}"
        while True:  # kill this folder's build again and again until a run gets to finish
            proc = start(build(cfg, out))
            time.sleep(rng.uniform(lo, hi))
            if proc.poll() is not None:  # it finished before the kill
                assert proc.returncode == 0, proc.stderr.read()
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            landed += 1
            done = len(store.load_manifest(out)["shards"]) if (out / store.MANIFEST).exists() else None
            states.append(done)
            if landed >= KILLS:
                break
        finish(build(cfg, out))  # the rerun after the last kill
        assert files_of(out) == expected, f"storm {storm}: the zoo differs from the unkilled build"
        rows = store.read_zoo(out)
        ids = list(zip(rows["member_id"].to_pylist(), rows["step"].to_pylist()))
        assert len(ids) == len(set(ids)) and rows.equals(store.read_zoo(clean))  # nothing lost or duplicated
        visible = [p.name for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")]
        assert all(not name.endswith(".tmp") for name in visible)
        storm += 1
    # the kills spread over the build: at several stages, some part-way through the shards
    assert len(set(states)) >= 3 and any(s is not None and 0 < s < n_shards for s in states), states
