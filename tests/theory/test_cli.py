"""`mole theory rss | npp`: the parser, the written CSV + PNG, and same seed -> same CSV."""

import pytest

from mole.cli import main, parse
from mole.theory.commands import npp_command, rss_command

PNG = b"\x89PNG\r\n\x1a\n"


def test_rss_writes_csv_png_and_is_reproducible(tmp_path, capsys):
    args = dict(n=[2, 6, 10], eps=[0.2, 0.05], bits=[None, 4], trials=30, targets=51, seed=3)
    assert rss_command(out=str(tmp_path / "a"), **args) == 0
    out = capsys.readouterr().out
    assert "continuous" in out and "4-bit" in out and "rss.png" in out
    assert (tmp_path / "a" / "rss.png").read_bytes()[:8] == PNG
    header = (tmp_path / "a" / "rss.csv").read_text().splitlines()[0]
    assert header == "dist,bits,n,eps,trials,successes,p_success,quant_floor,method,targets"
    assert "exact method" in out
    assert rss_command(out=str(tmp_path / "b"), **args) == 0
    for name in ("rss.csv", "rss_needed.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_npp_through_the_parser(tmp_path, capsys):
    argv = ["theory", "npp", "--out", str(tmp_path), "--n", "[8,12]", "--trials", "20", "--seed", "5"]
    assert main(argv) == 0
    assert "kappa_50" in capsys.readouterr().out
    assert (tmp_path / "npp.png").read_bytes()[:8] == PNG
    first = (tmp_path / "npp.csv").read_bytes()
    assert first.startswith(b"n,b,kappa,trials,perfect,p_perfect,kappa_c_n,p_predicted\n")
    assert npp_command(out=str(tmp_path), n=[8, 12], kappa_min=0.4, kappa_max=1.6, trials=20, seed=5) == 0
    assert (tmp_path / "npp.csv").read_bytes() == first


def test_parser_defaults_help_and_errors(tmp_path, capsys):
    cfg = parse(["theory", "rss", "--bits", "[null,8]"]).theory.rss
    assert cfg.bits == [None, 8] and cfg.trials == 1000 and cfg.n[-1] == 24 and cfg.out == "runs/theory"
    assert cfg.method == "exact" and parse(["theory", "rss", "--method", "grid"]).theory.rss.method == "grid"
    assert parse(["theory", "npp", "--kappa-min", "0.5"]).theory.npp.kappa_min == 0.5  # the dashed spelling
    with pytest.raises(SystemExit):
        main(["theory", "npp", "--help"])
    assert "kappa_c(n) = 1 - log2(n)/(2n)" in " ".join(capsys.readouterr().out.split())
    assert main(["theory", "rss", "--out", str(tmp_path), "--bits", "[1]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mole: error: bits: unsupported bit-width") and err.count("\n") == 1
    assert main(["theory", "npp", "--out", str(tmp_path), "--n", "[8,-3]"]) == 2
    assert capsys.readouterr().err.startswith("mole: error: n: must be a non-empty list of positive integers")
    assert main(["theory", "rss", "--out", str(tmp_path), "--n", "[30]"]) == 2
    assert capsys.readouterr().err.startswith("mole: error: n: 30 exceeds the exact method's limit 24")
    assert not any(tmp_path.iterdir())  # nothing written on bad input


def test_rss_grid_method_through_the_parser(tmp_path, capsys):
    argv = ["theory", "rss", "--out", str(tmp_path), "--n", "[4,30]", "--eps", "[0.1]", "--bits", "[null]"]
    assert main([*argv, "--trials", "3", "--method", "grid", "--targets", "11"]) == 0
    assert "grid method" in capsys.readouterr().out
    rows = (tmp_path / "rss.csv").read_text().splitlines()
    assert rows[1].endswith(",grid,11") and len(rows) == 3
