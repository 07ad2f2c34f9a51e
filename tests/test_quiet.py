"""Library chatter goes to the run's log file, real errors and unknown warnings still reach the console."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import datasets
import lightning.pytorch  # noqa: F401  (sets up its loggers as in a run: level INFO, a console handler)
import pytest

from mole.quiet import chatter_to

REPO = Path(__file__).resolve().parents[1]
STAGE_LINE = re.compile(r"^\[[a-z ]+\] (done before \()?\d+\.\d s")


def test_chatter_goes_to_the_file_and_errors_to_both(tmp_path, capfd, monkeypatch):
    lightning = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    log = tmp_path / "run.log"
    shown = []  # what reaches the console's warning printer
    monkeypatch.setattr(warnings, "showwarning", lambda message, *args, **kw: shown.append(str(message)))
    with chatter_to(log):
        lightning.info("TPU available: False, using: 0 TPU cores")
        lightning.error("a real failure")
        sys.stderr.write("wandb: Tracking run with wandb version 0\n")
        sys.stderr.write("\x1b[34m\x1b[1mwandb\x1b[0m: styled banner\n")  # as W&B writes it on a terminal
        sys.stderr.write("a line of our own\n")
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # deprecations are hidden by default outside __main__
            warnings.warn_explicit(
                "`LeafSpec` is deprecated", DeprecationWarning, "/lib/site-packages/x.py", 3
            )
            warnings.warn_explicit("smaller than the logging interval", UserWarning, "/lib/x.py", 4)
            warnings.warn_explicit("something the user should see", UserWarning, "/lib/y.py", 5)
    out, err = capfd.readouterr()
    text = log.read_text()
    for line in ("TPU available", "a real failure", "wandb: Tracking run", "wandb: styled banner", "LeafSpec",
                 "smaller than the logging interval", "something the user should see"):  # fmt: skip
        assert line in text, line
    assert (
        "TPU available" not in out + err
        and "wandb:" not in out + err
        and "banner" not in err
        and "LeafSpec" not in err
    )
    assert "a real failure" in err and "a line of our own" in err
    assert shown == ["something the user should see"]  # not the deprecation, not the known hint


def test_everything_is_put_back(tmp_path):
    names = ("lightning.pytorch", "datasets", "")
    handlers = {n: logging.getLogger(n).handlers[:] for n in names}
    propagate = {n: logging.getLogger(n).propagate for n in names}
    stderr, show = sys.stderr, warnings.showwarning
    with pytest.raises(RuntimeError), chatter_to(tmp_path / "run.log"):
        assert sys.stderr is not stderr and warnings.showwarning is not show
        raise RuntimeError("a stage failed")
    assert sys.stderr is stderr and warnings.showwarning is show
    assert {n: logging.getLogger(n).handlers for n in names} == handlers
    assert {n: logging.getLogger(n).propagate for n in names} == propagate


@pytest.mark.slow  # the tiny quickstart in a subprocess, W&B offline so that its banners are printed
def test_tiny_quickstart_console_is_stage_lines_only(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "mole", "quickstart", "--out", str(out), "--preset", "tiny"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[-2:] == [f"library output: {out / 'quickstart.log'}", f"report: {out / 'report.md'}"]
    assert all(STAGE_LINE.match(line) for line in lines[:-2]), lines
    assert [line.split("]")[0][1:] for line in lines[:-2]] == [
        "zoo", "train weights", "train masks", "sample", "baselines", "theory", "sgd timing", "report",
    ]  # fmt: skip
    console = done.stdout + done.stderr
    for chatter in ("Tip", "TPU available", "GPU available", "wandb", "Warning", "deprecated", "Seed set"):
        assert chatter not in console, chatter
    log = (out / "quickstart.log").read_text()
    for chatter in (
        "💡 Tip",
        "TPU available",
        "wandb: Tracking run",
        "LeafSpec",
        "log_every_n_steps",
        "Seed set",
    ):
        assert chatter in log, chatter


def test_datasets_bars_are_off_inside_and_back_after(tmp_path):
    datasets.enable_progress_bars()  # imported before the block, as when a zoo was read earlier
    with chatter_to(tmp_path / "run.log"):
        assert not datasets.is_progress_bar_enabled()
    assert datasets.is_progress_bar_enabled()
