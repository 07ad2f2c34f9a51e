"""A long stage shows a bar on a terminal and one summary line elsewhere; the commands use it."""

from __future__ import annotations

import json
import re

import pytest

from mole import progress
from mole.cli import main
from mole.progress import StageProgress
from mole.zoo import store
from mole.zoo.build import build_zoo
from mole.zoo.spec import ZooSpec
from tests.conftest import TINY_ZOO


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "tiny"
    build_zoo(ZooSpec.from_dict(TINY_ZOO), out, progress=False)
    return out


def test_off_a_terminal_one_summary_line(capsys):
    with StageProgress("rss", unit="trials") as update:
        for t in range(5):
            update(t + 1, 5)
    assert re.fullmatch(r"rss: 5/5 trials, \d+\.\d s\n", capsys.readouterr().out)
    with StageProgress("reading the zoo"):  # never updated: time only
        pass
    assert re.fullmatch(r"reading the zoo: \d+\.\d s\n", capsys.readouterr().out)


def test_quiet_when_asked(capsys):
    with StageProgress("rss", summary=False) as update:
        update(1, 1)
    with StageProgress("rss", enabled=False) as update:
        assert update is None  # the work then skips its progress calls
    assert capsys.readouterr().out == ""


def test_a_failed_stage_prints_no_summary(capsys):
    with pytest.raises(ValueError), StageProgress("rss") as update:
        update(1, 2)
        raise ValueError("bad")
    assert capsys.readouterr().out == ""


def test_on_a_terminal_a_bar(monkeypatch, capsys):
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    stage = StageProgress("npp", unit="cells", summary=False)
    with stage as update:
        assert stage.bar is not None
        update(2, 4)
        assert stage.bar.tasks[0].completed == 2 and stage.bar.tasks[0].total == 4
    assert stage.bar.live.transient  # the bar leaves no frame behind: the command's own lines follow


def test_theory_and_zoo_commands_print_their_summary_line(tmp_path, capsys, tiny_zoo):
    argv = ["theory", "rss", "--out", str(tmp_path / "t"), "--n", "[4]", "--eps", "[0.1]", "--bits", "[null]"]
    assert main([*argv, "--trials", "3"]) == 0
    assert re.search(r"^rss: 3/3 trials, \d+\.\d s$", capsys.readouterr().out, re.M)
    assert main(["theory", "npp", "--out", str(tmp_path / "t"), "--n", "[8]", "--trials", "4"]) == 0
    assert re.search(r"^npp: \d+/\d+ \(n, b\) cells, \d+\.\d s$", capsys.readouterr().out, re.M)
    assert main(["zoo", "info", str(tiny_zoo), "--plot", str(tmp_path / "i.png")]) == 0
    assert re.search(r"^reading the zoo: \d+\.\d s$", capsys.readouterr().out, re.M)
    assert main(["zoo", "info", str(tiny_zoo), "--json", "--plot", str(tmp_path / "i.png")]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] > 0  # --json: nothing but the JSON
    member = next(r["member_id"] for r in store.read_zoo(tiny_zoo).to_pylist())
    assert main(["zoo", "export", str(tiny_zoo), member, "--to", str(tmp_path / "m")]) == 0
    assert re.search(rf"^exporting {member}: \d+\.\d s$", capsys.readouterr().out, re.M)
    argv = [
        "theory",
        "rss",
        "--out",
        str(tmp_path / "q"),
        "--n",
        "[4]",
        "--trials",
        "2",
        "--progress",
        "false",
    ]
    assert main(argv) == 0
    assert not re.search(r"^rss: ", capsys.readouterr().out, re.M)
