import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mole.errors import ConfigError, StoreError
from mole.io import atomic_path, is_temporary
from mole.zoo import store
from mole.zoo.build import build_zoo, default_processes, launcher_shards, resolve_shards
from mole.zoo.export import module_from_row
from mole.zoo.spec import ZooSpec, plan_groups
from tests.conftest import TINY_ZOO, write_spec

REPO = Path(__file__).resolve().parents[2]


def tiny(**overrides) -> ZooSpec:
    return ZooSpec.from_dict({**TINY_ZOO, **overrides})


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zoo") / "tiny"
    build_zoo(tiny(), out, progress=False)
    return out


def test_rows_hold_every_member_and_snapshot(built):
    table = store.read_zoo(built).to_pylist()
    spec = tiny()
    members = {r["member_index"] for r in table}
    assert members == set(range(spec.members))
    finals = [r for r in table if r["final"]]
    assert len(finals) == spec.members
    steps = sorted({r["step"] for r in table if r["member_index"] == 0})
    total = finals[0]["step"]
    assert steps == spec.snapshots.steps_for(total) and steps[0] == 0
    for r in finals:
        assert r["test_acc"] > 0.3  # two epochs already learn something
        assert r["variant"] == "dense" and r["sparsity"] == 0.0 and r["mask"] is None
        assert len(r["params"]) == r["num_params"] == 64 * 16 + 16 + 16 * 10 + 10


def test_random_snapshots_are_each_members_own_steps_of_the_same_run(tmp_path):
    """A member's random step holds the very params (and metrics) a build keeping that step for all holds."""
    spec = tiny(snapshots={"every": 1000, "random": 3})
    build_zoo(spec, tmp_path / "random", progress=False)
    rows = store.read_zoo(tmp_path / "random").to_pylist()
    total = max(r["step"] for r in rows)
    drawn = {}
    for group in plan_groups(spec):
        for m in group.members:
            drawn[m.index] = spec.snapshots.random_steps(total, m.seed)
            steps = sorted(r["step"] for r in rows if r["member_index"] == m.index)
            assert steps == sorted(spec.snapshots.steps_for(total) + drawn[m.index])
    assert len({tuple(v) for v in drawn.values()}) > 1  # members differ
    assert sum(r["final"] for r in rows) == spec.members
    member = next(i for i, v in drawn.items() if v)
    step = drawn[member][0]
    build_zoo(tiny(snapshots={"every": 1000, "steps": [step]}), tmp_path / "shared", progress=False)
    want = next(
        r
        for r in store.read_zoo(tmp_path / "shared").to_pylist()
        if (r["member_index"], r["step"]) == (member, step)
    )
    got = next(r for r in rows if (r["member_index"], r["step"]) == (member, step))
    assert got["params"] == want["params"] and got["test_acc"] == want["test_acc"]
    assert not got["final"]


def test_stored_metrics_match_rebuilt_module(built, digits):
    row = next(r for r in store.read_zoo(built).to_pylist() if r["final"])
    module = module_from_row(row)
    with torch.no_grad():
        acc = (module(digits.x_test).argmax(1) == digits.y_test).double().mean().item()
    assert acc == pytest.approx(row["test_acc"], abs=1e-12)


def test_same_config_twice_gives_identical_files(built, tmp_path):
    again = tmp_path / "again"
    build_zoo(tiny(), again, progress=False)
    assert files_of(again) == files_of(built)


def test_rerun_resumes_and_skips(built, tmp_path):
    out = tmp_path / "z"
    first = build_zoo(tiny(), out, progress=False)
    before = files_of(out)
    second = build_zoo(tiny(), out, progress=False)
    assert first.built == [0, 1] and second.built == [] and second.skipped == [0, 1]
    assert files_of(out) == before


def test_split_across_processes_equals_one_build(built, tmp_path):
    out = tmp_path / "split"
    r0 = build_zoo(tiny(), out, num_shards=2, shard_index=0, progress=False)
    assert r0.built == [0]
    assert set(store.load_manifest(out)["shards"]) == {"shard-00000"}
    build_zoo(tiny(), out, num_shards=2, shard_index=1, progress=False)
    assert files_of(out) == files_of(built)


def test_datasets_reads_the_zoo(built, tmp_path):
    ds = store.load_zoo_dataset(built, cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == store.read_zoo(built).num_rows
    assert {"member_id", "params", "test_acc", "step"} <= set(ds.column_names)


def test_stray_temporary_and_unlisted_files_are_ignored(built, tmp_path):
    out = tmp_path / "z"
    out.mkdir()
    for name, data in files_of(built).items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    # A shard that was renamed into place but never recorded, and a half-written temporary file.
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["shards"]["shard-00001"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "shards" / "shard-00001.parquet").write_bytes(b"half a shard")
    (out / "shards" / ".shard-00001.parquet.abc.tmp").write_bytes(b"PAR1 garbage")
    assert store.read_zoo(out).num_rows < store.read_zoo(built).num_rows  # only listed shards count
    result = build_zoo(tiny(), out, progress=False)
    assert result.built == [1]
    assert store.load_manifest(out) == store.load_manifest(built)
    assert store.read_zoo(out).equals(store.read_zoo(built))


@pytest.mark.parametrize(
    "leftovers",
    [
        [".spec.json.k1ll3d00.tmp"],  # killed while writing spec.json, right after the folder was made
        [".manifest.lock", ".manifest.json.x7y8z9ab.tmp"],  # killed while writing the manifest
        [".spec.json.old"],  # an atomic_dir swap cut between its two renames
    ],
)
def test_a_killed_writes_temporary_files_do_not_block_a_rerun(built, tmp_path, leftovers):
    out = tmp_path / "z"
    out.mkdir()
    for name in leftovers:
        assert is_temporary(out / name) or name == store.LOCK
        (out / name).write_bytes(b'{"spec_ha')
    result = build_zoo(tiny(), out, progress=False)
    assert result.built == [0, 1]
    assert files_of(out) == files_of(built)


def test_the_leftover_is_named_as_atomic_path_names_its_temporary_file(tmp_path):
    """The names the rerun ignores are the ones a killed atomic_path leaves (not a guess of them)."""
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "spec.json") as tmp:
        assert is_temporary(tmp) and tmp.parent == tmp_path
        raise RuntimeError("killed")  # a kill leaves `tmp` behind; an exception is cleaned up
    assert not is_temporary(tmp_path / "spec.json") and not is_temporary(tmp_path / ".spec.json")


def test_a_folder_with_a_file_of_its_own_is_still_refused(tmp_path):
    out = tmp_path / "z"
    out.mkdir()
    (out / ".spec.json.k1ll3d00.tmp").write_bytes(b"")
    (out / "notes.tmp").write_text("the user's\n")  # not hidden: not a name mole writes to
    with pytest.raises(StoreError, match="folder is not empty and holds no zoo"):
        build_zoo(tiny(), out, progress=False)


@pytest.mark.slow  # a build killed in a subprocess right after it creates its folder
def test_sigkill_right_after_the_folder_is_created_then_rerun_builds(built, tmp_path):
    """A real kill as close after the folder appears as polling allows. It rarely lands before
    spec.json is renamed into place (the window is a few writes wide), so the deterministic guard is
    test_a_killed_writes_temporary_files_do_not_block_a_rerun; this one checks the whole path."""
    cfg = write_spec(tmp_path / "tiny.yaml")
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "mole", "zoo", "build", str(cfg), "--out", str(out), "--progress", "false"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not out.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert out.is_dir(), "the kill should land after the folder exists"
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert files_of(out) == files_of(built)


@pytest.mark.parametrize("damage", ["truncate", "delete", "hash", "manifest_json"])
def test_damaged_zoo_is_refused_and_left_alone(built, tmp_path, damage):
    out = tmp_path / "z"
    out.mkdir()
    for name, data in files_of(built).items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    shard = out / "shards" / "shard-00000.parquet"
    if damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:100])
    elif damage == "delete":
        shard.unlink()
    elif damage == "hash":
        m = json.loads((out / "manifest.json").read_text())
        m["shards"]["shard-00000"]["sha256"] = "0" * 64
        (out / "manifest.json").write_text(json.dumps(m))
    else:
        (out / "manifest.json").write_text("{not json")
    before = files_of(out)
    expected = {
        "truncate": "sha256 mismatch",
        "delete": "missing",
        "hash": "sha256 mismatch",
        "manifest_json": "corrupt manifest",
    }
    with pytest.raises(StoreError, match=expected[damage]):
        build_zoo(tiny(), out, progress=False)
    with pytest.raises(StoreError, match=expected[damage]):
        store.read_zoo(out)
    assert files_of(out) == before


def test_other_spec_in_same_folder_is_refused(built, tmp_path):
    out = tmp_path / "z"
    build_zoo(tiny(), out, progress=False)
    before = files_of(out)
    with pytest.raises(StoreError, match="another spec"):
        build_zoo(tiny(seed=9), out, progress=False)
    assert files_of(out) == before


@pytest.mark.slow  # builds killed and resumed in subprocesses
def test_sigkill_mid_build_then_rerun_equals_uninterrupted(tmp_path):
    """Kill a build in a subprocess once its first shard is recorded; rerunning completes it exactly."""
    overrides = {"members": 8, "group_size": 2, "hparams": {**TINY_ZOO["hparams"], "epochs": [12]}}
    cfg = write_spec(tmp_path / "kill.yaml", **overrides)
    spec = ZooSpec.from_yaml(cfg)
    n_groups = len(plan_groups(spec))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "mole", "zoo", "build", str(cfg), "--out", str(out), "--progress", "false"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if len(store.load_manifest(out)["shards"]) >= 1:
                break
        except StoreError:
            pass
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = len(store.load_manifest(out)["shards"])
    assert 1 <= done_at_kill < n_groups, "the kill should land part-way through the build"
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"skipped {done_at_kill}" in rerun.stdout

    clean = tmp_path / "clean"
    build_zoo(spec, clean, progress=False)
    assert store.load_manifest(out) == store.load_manifest(clean)
    rows = store.read_zoo(out)
    assert rows.equals(store.read_zoo(clean))
    ids = list(zip(rows["member_id"].to_pylist(), rows["step"].to_pylist()))
    assert len(ids) == len(set(ids))  # no duplicate rows
    leftovers = [p.name for p in (out / "shards").iterdir() if p.name.endswith(".tmp")]
    listed = {Path(e["file"]).name for e in store.load_manifest(out)["shards"].values()}
    assert {p.name for p in (out / "shards").glob("*.parquet")} == listed
    assert leftovers == [] or all(p.startswith(".") for p in leftovers)


def test_repeated_variant_level_is_refused(tmp_path):
    from mole.errors import ConfigError

    with pytest.raises(ConfigError, match=r"variants\[1\]: repeats level 'dense' of variants\[0\]"):
        build_zoo(tiny(variants=["dense", "dense"]), tmp_path / "z", progress=False)
    assert not (tmp_path / "z").exists()


def test_worker_processes_build_the_same_zoo(built, tmp_path):
    build_zoo(tiny(), tmp_path / "w", progress=False, processes=3)
    assert files_of(tmp_path / "w") == files_of(built)


@pytest.mark.parametrize(
    "environ,expected",
    [
        ({}, (1, 0)),
        ({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_WORLD_SIZE": "2"}, (4, 3)),  # torchrun
        ({"SLURM_STEP_NUM_TASKS": "3", "SLURM_PROCID": "2", "SLURM_NTASKS": "3"}, (3, 2)),  # srun
        ({"SLURM_NTASKS": "4", "SLURM_PROCID": "0"}, (1, 0)),  # a batch script, outside srun: not split
        ({"SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_ID": "2"}, (4, 2)),  # --array=0-3
        ({"SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "3"}, (4, 2)),
        (  # --array=1-7:2 -> tasks 1, 3, 5, 7
            {"SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1",
             "SLURM_ARRAY_TASK_STEP": "2"},
            (4, 2),
        ),
        (  # array task 1 of 3, each running torchrun with 2 ranks: rank 1 is part 1*2+1 of 6
            {"SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_ID": "1", "WORLD_SIZE": "2", "RANK": "1"},
            (6, 3),
        ),
    ],
)  # fmt: skip
def test_launcher_variables_give_the_shard(environ, expected):
    assert launcher_shards(environ) == expected


def test_explicit_flags_beat_launcher_variables():
    env = {"WORLD_SIZE": "2", "RANK": "1"}
    assert resolve_shards(None, None, env) == (2, 1)
    assert resolve_shards(None, 0, env) == (2, 0)
    assert resolve_shards(3, 2, env) == (3, 2)


@pytest.mark.parametrize(
    "environ,needle",
    [
        ({"WORLD_SIZE": "2", "RANK": "two"}, "RANK='two' is not an integer"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "part 2 of 2"),
    ],
)
def test_bad_launcher_variables_are_one_line(environ, needle):
    with pytest.raises(ConfigError, match=needle):
        launcher_shards(environ)


def test_default_processes_share_the_cores_among_local_ranks():
    assert default_processes({}) >= 1
    assert default_processes({"LOCAL_WORLD_SIZE": "1000"}) == 1


def _cli_build(spec: Path, out: Path, *flags: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", **env}
    cmd = [sys.executable, "-m", "mole", "zoo", "build", str(spec), "--out", str(out), "--progress", "false"]
    return subprocess.run([*cmd, *flags], env=environ, capture_output=True, text=True, timeout=300)


def test_the_cli_takes_its_shard_from_the_launcher_and_a_flag_wins(tmp_path):
    spec = write_spec(tmp_path / "tiny.yaml")
    r = _cli_build(spec, tmp_path / "env", WORLD_SIZE="2", RANK="1")
    assert r.returncode == 0, r.stderr
    assert set(store.load_manifest(tmp_path / "env")["shards"]) == {"shard-00001"}
    r = _cli_build(spec, tmp_path / "flag", "--shard-index", "0", WORLD_SIZE="2", RANK="1")
    assert r.returncode == 0, r.stderr
    assert set(store.load_manifest(tmp_path / "flag")["shards"]) == {"shard-00000"}


@pytest.mark.slow
def test_torchrun_two_processes_build_the_same_zoo(built, tmp_path):
    """`torchrun --nproc-per-node 2 -m mole zoo build`: each rank builds its shards; the merge is one build."""
    spec, out = write_spec(tmp_path / "tiny.yaml"), tmp_path / "torchrun"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "mole", "zoo", "build", str(spec)]
    environ = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    r = subprocess.run(
        [*cmd, "--out", str(out), "--progress", "false"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("built 1 shard(s)") == 2  # one group per rank
    assert files_of(out) == files_of(built)
