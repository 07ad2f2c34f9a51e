"""`mole baselines run | subset-sum` through the parser: what they write and print, and one-line errors."""

import re

import pytest

from mole.cli import main
from mole.zoo import store

PNG = b"\x89PNG\r\n\x1a\n"


def test_run_writes_a_zoo_of_baseline_rows(tiny_zoo, tmp_path, capsys):
    out = tmp_path / "b"
    argv = ["baselines", "run", str(tiny_zoo), "--out", str(out), "--baselines", "[magnitude,random]",
            "--sparsity", "[0.5,0.8]", "--options", '{"magnitude": {"scope": "layerwise"}}', "--progress", "false"]  # fmt: skip
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
    assert main(["baselines", "subset-sum", "--out", str(out), "--zoo", str(target_zoo), "--n", "[4,8]"]) == 0
    printed = capsys.readouterr().out
    assert "subset-sum tickets for" in printed and "subset_sum.png" in printed
    header = (out / "subset_sum.csv").read_text().splitlines()[0]
    assert header.startswith(
        "n,target_range,units_per_input,hidden,num_params,weight_err_max,weight_err_mean"
    )
    assert len((out / "subset_sum.csv").read_text().splitlines()) == 3
    assert (out / "subset_sum.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["subset-sum", "--out", "{y}", "--zoo", "{zoo}", "--n", "[8,48]"], r"n: must be an integer in \[1, 40\]"),
        (["subset-sum", "--out", "{y}", "--zoo", "{zoo}", "--n", "[]"], "n: an empty list"),
        (["run", "{zoo}", "--out", "{y}", "--baselines", "[prune]"], "baselines: unknown baseline 'prune'"),
        (["run", "{zoo}", "--out", "{y}", "--baselines", "[]"], "baselines: an empty list"),
        (["run", "{zoo}", "--out", "{y}", "--baselines", "[random]", "--options", '{"imp": {}}'],
         r"options.imp: not among --baselines"),
        (["run", "{zoo}", "--out", "{y}", "--variant", "quantized"],
         r"variant: no 'quantized' rows in .*; it holds: dense, imp"),
        (["run", "{zoo}", "--out", "{y}", "--sparsity", "[0.5,x]"], r"sparsity: Expected a <class 'float'>"),
        (["run", "{zoo}", "--out", "{y}", "--options", '{"imp": 3}'], r"options: Expected a <class 'dict'>"),
    ],
)  # fmt: skip
def test_errors_are_one_line_and_name_the_field(tiny_zoo, tmp_path, capsys, argv, needle):
    argv = [a.replace("{zoo}", str(tiny_zoo)).replace("{y}", str(tmp_path / "y")) for a in argv]
    assert main(["baselines", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.match(f"mole: error: {needle}", err), err
    assert not (tmp_path / "y").exists()
