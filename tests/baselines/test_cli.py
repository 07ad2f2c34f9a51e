"""`mole baselines run | subset-sum` through the parser: what they write and print, and one-line errors."""

import pytest
from jsonargparse import ArgumentParser

from mole.baselines.cli import add_baselines_parser, parse_list, run_baselines_command
from mole.errors import ConfigError
from mole.zoo import store

PNG = b"\x89PNG\r\n\x1a\n"


def main(argv: list[str]) -> int:
    top = ArgumentParser(prog="mole")
    add_baselines_parser(top.add_subcommands(dest="command"))
    return run_baselines_command(top.parse_args(argv).baselines)


def test_run_writes_a_zoo_of_baseline_rows(tiny_zoo, tmp_path, capsys):
    out = tmp_path / "b"
    argv = ["baselines", "run", str(tiny_zoo), "--out", str(out), "--baselines", "magnitude,random",
            "--sparsity", "0.5,0.8", "--options", '{"magnitude": {"scope": "layerwise"}}', "--progress", "false"]  # fmt: skip
    assert main(argv) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "magnitude" in printed and "scope=layerwise, sparsity=0.8" in printed and "24 rows" in printed
    rows = store.read_zoo(out).to_pylist()
    assert sorted({r["variant"] for r in rows}) == ["magnitude", "random"]
    assert sorted({r["sparsity"] for r in rows if r["variant"] == "random"}) == pytest.approx(
        [0.5, 0.8], abs=1e-3
    )


def test_subset_sum_from_a_zoo_writes_csv_and_png(target_zoo, tmp_path, capsys):
    out = tmp_path / "ss"
    assert main(["baselines", "subset-sum", "--out", str(out), "--zoo", str(target_zoo), "--n", "4,8"]) == 0
    printed = capsys.readouterr().out
    assert "subset-sum tickets for" in printed and "subset_sum.png" in printed
    header = (out / "subset_sum.csv").read_text().splitlines()[0]
    assert header.startswith(
        "n,target_range,units_per_input,hidden,num_params,weight_err_max,weight_err_mean"
    )
    assert len((out / "subset_sum.csv").read_text().splitlines()) == 3
    assert (out / "subset_sum.png").read_bytes()[:8] == PNG


def test_errors_are_one_line_and_name_the_field(tiny_zoo, tmp_path):
    with pytest.raises(ConfigError, match=r"^n: must be an integer in \[1, 40\]"):
        main(["baselines", "subset-sum", "--out", str(tmp_path / "x"), "--zoo", str(tiny_zoo), "--n", "8,48"])
    with pytest.raises(ConfigError, match=r"^baselines: unknown baseline 'prune'"):
        main(["baselines", "run", str(tiny_zoo), "--out", str(tmp_path / "y"), "--baselines", "prune"])
    with pytest.raises(ConfigError, match=r"^options.imp: not among --baselines"):
        main(["baselines", "run", str(tiny_zoo), "--out", str(tmp_path / "y"), "--baselines", "random",
              "--options", '{"imp": {}}'])  # fmt: skip
    with pytest.raises(ConfigError, match=r"^variant: no 'quantized' rows in .*; it holds: dense, imp"):
        main(["baselines", "run", str(tiny_zoo), "--out", str(tmp_path / "y"), "--variant", "quantized"])
    with pytest.raises(ConfigError, match=r"^sparsity: expected a comma-separated list"):
        parse_list("0.5,x", float, "sparsity")
    assert not (tmp_path / "y").exists()
    assert parse_list("[4, 8]", int, "n") == parse_list("4,8", int, "n") == [4, 8]
