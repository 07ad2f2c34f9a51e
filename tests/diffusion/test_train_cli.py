"""`mole train`: two-process DDP on CPU (gloo), two nodes through torchrun's rendezvous, resume after
SIGKILL, model export, the mask system from its config, one-line errors."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mole.cli import main
from mole.diffusion.model_dir import load_model
from mole.masks.model import MaskModel
from tests.diffusion.helpers import mixed_zoos
from tests.masks.helpers import build_mask_zoo
from tests.tokenizer.helpers import tiny_zoo

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "diffusion" / "digits_tiny.yaml"
MASKS_CONFIG = CONFIG.with_name("masks_tiny.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return tiny_zoo(tmp_path_factory)


@pytest.fixture(scope="module")
def mask_zoo(tmp_path_factory):
    return build_mask_zoo(tmp_path_factory.mktemp("mask-zoo") / "zoo")


def command(zoo: Path, cache: str, run_dir: Path, *extra: str, config: Path = CONFIG) -> list[str]:
    return [
        sys.executable, "-m", "mole", "train", str(config),
        "--data.zoo", str(zoo), "--data.cache_dir", cache, "--run_dir", str(run_dir),
        "--trainer.accelerator", "cpu", "--trainer.enable_model_summary", "false", *extra,
    ]  # fmt: skip


def global_step(ckpt: Path) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]


@pytest.mark.slow  # two DDP subprocesses
def test_two_process_ddp_trains_checkpoints_and_exports(zoo, cache, tmp_path):
    run_dir = tmp_path / "run"
    cmd = command(
        zoo, cache, run_dir, "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.max_steps", "4"
    )
    result = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=240)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    log = (run_dir / "train.log").read_text()  # Lightning's lines, kept off the console
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log
    assert global_step(run_dir / "checkpoints" / "last.ckpt") == 4
    denoiser, scheduler, tokenizer, meta = load_model(run_dir / "model")
    assert denoiser.config.width == 32 and meta["target"] == "weights" and tokenizer.stats is not None
    assert (run_dir / "csv" / "version_0" / "config.yaml").is_file()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two torchrun launches, one per "node", meeting at a c10d rendezvous on localhost
def test_two_nodes_through_torchrun_rendezvous(zoo, cache, tmp_path):
    """2 nodes x 1 process: what a multi-node launch does, with both nodes on this machine."""
    run_dir = tmp_path / "run"
    train = command(zoo, cache, run_dir, "--trainer.strategy", "ddp", "--trainer.devices", "1",
                    "--trainer.num_nodes", "2", "--trainer.max_steps", "4")[3:]  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{free_port()}", "--rdzv-id", "mole-test",
                "-m", "mole", *train]  # fmt: skip
    nodes = [
        subprocess.Popen(
            torchrun, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, cwd=tmp_path
        )
        for _ in range(2)
    ]
    outs = [node.communicate(timeout=240)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-3000:] for o in outs)
    both = "\n".join(outs) + (run_dir / "train.log").read_text()
    assert "MEMBER: 1/2" in both and "MEMBER: 2/2" in both and "Starting with 2 processes" in both
    assert global_step(run_dir / "checkpoints" / "last.ckpt") == 4
    assert load_model(run_dir / "model")[3]["target"] == "weights"


@pytest.mark.slow  # a killed subprocess, then a resumed one
def test_killed_run_resumes_from_its_last_checkpoint(zoo, cache, tmp_path):
    run_dir = tmp_path / "run"
    cmd = command(zoo, cache, run_dir, "--trainer.max_steps", "150", "--checkpoint_every", "5")
    last = run_dir / "checkpoints" / "last.ckpt"
    with open(tmp_path / "first.log", "w") as log:
        # its own session, so the kill reaches exactly this run and any worker it started
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=tmp_path, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 120
            while not last.exists():
                assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint within 120 s"
                time.sleep(0.02)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    killed_at = global_step(last)
    assert 5 <= killed_at < 150 and not (run_dir / "model").exists()

    result = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=240)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert f"resuming from {last}" in out
    assert global_step(last) == 150
    with open(run_dir / "csv" / "version_1" / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert min(steps) >= killed_at  # the rerun continued, it did not start again at step 0
    assert load_model(run_dir / "model")[3]["conditions"]["variant"]["vocab"] == ["dense"]


def test_library_chatter_goes_to_the_run_log(zoo, cache, tmp_path):
    """`mole train` alone: Lightning's device lines and tips in <run_dir>/train.log, not on the console."""
    run_dir = tmp_path / "run"
    result = subprocess.run(command(zoo, cache, run_dir, "--trainer.max_steps", "2"), capture_output=True,
                            text=True, env=ENV, cwd=tmp_path, timeout=240)  # fmt: skip
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-4000:]
    log = (run_dir / "train.log").read_text()
    for chatter in ("GPU available: ", "TPU available: ", "`Trainer.fit` stopped"):
        assert chatter in log and chatter not in console, chatter
    assert (run_dir / "model").is_dir()


def test_bad_config_is_one_line_error(zoo, cache, tmp_path, capsys):
    args = command(zoo, cache, tmp_path / "run", "--data.target", "biases")[3:]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == "mole: error: target: unknown 'biases'; valid: weights, mask"
    assert not (tmp_path / "run").exists()


def test_resuming_another_models_checkpoint_is_one_line_error(zoo, cache, tmp_path, capsys):
    """A run_dir rerun with a changed network option: refused in one line, the checkpoint untouched;
    the same command again resumes."""
    run_dir = tmp_path / "run"
    assert main(command(zoo, cache, run_dir, "--trainer.max_steps", "2")[3:]) == 0
    last = run_dir / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    capsys.readouterr()
    changed = command(zoo, cache, run_dir, "--trainer.max_steps", "3", "--model.init_args.net.init_args.self_condition", "true")  # fmt: skip
    assert main(changed[3:]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"mole: error: run_dir: {last} is a checkpoint of another model"
    )
    assert "self_embed" in err[0] and last.read_bytes() == before
    assert main(command(zoo, cache, run_dir, "--trainer.max_steps", "3")[3:]) == 0
    assert f"resuming from {last}" in capsys.readouterr().out and global_step(last) == 3


@pytest.mark.parametrize(
    "extra, words",
    [
        (("--trainer.strategy", "fsdp"), "fsdp` requires a GPU accelerator"),  # untested: README
        (("--trainer.devices", "0"), "devices"),
    ],
)
def test_an_impossible_trainer_is_one_line_error(zoo, cache, tmp_path, capsys, extra, words):
    args = command(zoo, cache, tmp_path / "run", "--trainer.accelerator", "cpu", *extra)[3:]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the data cache's first-build bar
    assert err.startswith("mole: error: trainer: ") and words in err, err
    assert not (tmp_path / "run").exists()


def test_the_mask_system_trains_from_its_config(mask_zoo, cache, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(command(mask_zoo, cache, run_dir, "--trainer.max_steps", "3", config=MASKS_CONFIG)[3:]) == 0
    assert global_step(run_dir / "checkpoints" / "last.ckpt") == 3
    net, scheduler, tokenizer, meta = load_model(run_dir / "model")
    assert isinstance(net, MaskModel) and scheduler is None and net.config.width == 32
    assert (
        meta["target"] == "mask" and meta["mask_prior"]["passes"] == 3 and meta["variants"] == ["supermask"]
    )
    assert net.config.channels == meta["channels"] and "context_dim" not in net.config


@pytest.mark.parametrize(
    "config,target,message",
    [
        (CONFIG, "mask", "data.target: is 'mask', this system learns from 'weights' rows"),
        (MASKS_CONFIG, "weights", "data.target: is 'weights', this system learns from 'mask' rows"),
    ],
)
def test_a_system_and_other_rows_is_one_line_error(
    mask_zoo, cache, tmp_path, capsys, config, target, message
):
    args = command(mask_zoo, cache, tmp_path / "run", "--data.target", target, config=config)[3:]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mole: error: {message}") and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_each_training_closes_its_wandb_run(zoo, cache, tmp_path, monkeypatch):
    """wandb keeps one global run per process: a run left open would swallow the next model's (the
    quickstart trains two in one process) and the report's logging."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("a", "b"):
        run_dir = tmp_path / name
        argv = command(zoo, cache, run_dir, "--trainer.max_steps", "2")[3:]
        assert main([*argv, "--wandb", "offline"]) == 0
        assert wandb.run is None
        assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1, name


def test_the_mixed_recipe_trains_on_a_list_of_zoos(tmp_path_factory, cache, tmp_path, capsys):
    """configs/mixed/weights.yaml with --data.zoo a list: one model over every zoo's cells; a list
    naming a folder that is no zoo is a one-line error."""
    zoos = [str(z) for z in mixed_zoos(tmp_path_factory)]
    config = CONFIG.parents[1] / "mixed" / "weights.yaml"
    tiny = ["--model.init_args.net.init_args.width", "32", "--model.init_args.net.init_args.depth", "1",
            "--model.init_args.net.init_args.global_rank", "8", "--model.init_args.function_inputs", "16",
            "--data.batch_size", "8", "--trainer.max_steps", "2", "--trainer.val_check_interval", "2"]  # fmt: skip
    run_dir = tmp_path / "run"
    assert main(command(f"[{', '.join(zoos)}]", cache, run_dir, *tiny, config=config)[3:]) == 0
    meta = load_model(run_dir / "model").meta
    assert meta["zoo"] == zoos and len(meta["cells"]) == 4
    assert meta["conditions"]["architecture"]["vocab"] == ["cnn", "mlp"]
    assert (
        main(command(f"[{zoos[0]}, {tmp_path / 'nowhere'}]", cache, tmp_path / "bad", config=config)[3:]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        err == f"mole: error: {tmp_path / 'nowhere'}: no such zoo folder" and not (tmp_path / "bad").exists()
    )
