"""A storm of SIGKILLs at seeded random instants of `mole zoo build`: every rerun resumes, and the zoo
it ends with is byte-identical to an unkilled build, nothing lost or duplicated."""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mole.errors import StoreError
from mole.zoo import store
from tests.conftest import TINY_ZOO, write_spec
from tests.zoo.test_build import REPO, files_of

# ~13 subprocess builds, ~1.5 min on 2 idle cores; the timeout leaves room for a busy machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

KILLS = 10
# 8 groups of one member: 8 shards, so kills land before, between and inside shard writes
SPEC = {"members": 8, "group_size": 1, "hparams": {**TINY_ZOO["hparams"], "epochs": [3]}}


def start(cfg: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mole", "zoo", "build", str(cfg), "--out", str(out), "--progress", "false"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def shards_done(out: Path) -> int | None:
    """Shards recorded in the manifest; None before there is one."""
    try:
        return len(store.load_manifest(out)["shards"]) if (out / store.MANIFEST).is_file() else None
    except StoreError:
        return None


def wait_for(proc: subprocess.Popen, out: Path, shards: int) -> None:
    while (shards_done(out) or 0) < shards and proc.poll() is None:
        time.sleep(0.005)


def test_random_kill_storm_then_rerun_equals_an_unkilled_build(tmp_path):
    cfg = write_spec(tmp_path / "storm.yaml", **SPEC)
    clean = tmp_path / "clean"
    proc, recorded = start(cfg, clean), []
    for k in range(1, 9):  # when each shard is recorded: the time one shard takes on this machine
        wait_for(proc, clean, k)
        recorded.append(time.perf_counter())
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert shards_done(clean) == 8
    shard_seconds = statistics.median(b - a for a, b in zip(recorded, recorded[1:]))
    expected = files_of(clean)

    # Each run is killed at a seeded random instant: once the manifest holds a chosen number of shards
    # (the run's own start when that many are already there), plus up to one shard's time.
    rng = random.Random(22)
    landed, states, storm = 0, [], 0
    while landed < KILLS:
        out = tmp_path / f"storm{storm}"
        while landed < KILLS and shards_done(out) != 8:
            proc = start(cfg, out)
            wait_for(proc, out, (shards_done(out) or 0) + rng.choice([0, 1, 1, 2]))
            time.sleep(rng.uniform(0, shard_seconds))
            if proc.poll() is not None:  # it finished before the kill
                assert proc.returncode == 0, proc.stderr.read()
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            landed += 1
            states.append(shards_done(out))
        proc = start(cfg, out)  # the rerun after the last kill
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert files_of(out) == expected, f"storm {storm}: the zoo differs from the unkilled build"
        rows = store.read_zoo(out)
        ids = list(zip(rows["member_id"].to_pylist(), rows["step"].to_pylist()))
        assert len(ids) == len(set(ids)) and rows.equals(store.read_zoo(clean))  # nothing lost or duplicated
        visible = [p.name for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")]
        assert all(not name.endswith(".tmp") for name in visible)
        storm += 1
    print(f"{landed} kills over {storm} folder(s), shards recorded at each: {states}")  # shown with -s
    # the kills spread over the build: at several stages, some part-way through the shards
    assert len(set(states)) >= 3 and any(s is not None and 0 < s < 8 for s in states), states
