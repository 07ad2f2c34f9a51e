"""The `mole` command: success paths print summaries; bad input is one line, exit 2, nothing written."""

import json

import pytest

from mole.cli import main
from tests.conftest import write_spec


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_build_info_export(tmp_path, capsys, tiny_spec_path):
    out = tmp_path / "zoo"
    code, stdout, _ = run(
        capsys, "zoo", "build", str(tiny_spec_path), "--out", str(out), "--progress", "false"
    )
    assert code == 0 and "built 2 shard(s), skipped 0" in stdout
    code, stdout, _ = run(
        capsys, "zoo", "build", str(tiny_spec_path), "--out", str(out), "--progress", "false"
    )
    assert code == 0 and "built 0 shard(s), skipped 2" in stdout
    code, stdout, _ = run(capsys, "zoo", "info", str(out), "--json")
    summary = json.loads(stdout)
    dense = summary["variants"]["dense"]
    assert code == 0 and dense["members"] == 6 and 0.3 < dense["test_acc_mean"] <= 1
    assert summary["shards_done"] == summary["shards_total"] == 2
    code, stdout, _ = run(capsys, "zoo", "info", str(out), "--plot", str(tmp_path / "acc.png"))
    assert code == 0 and "dense" in stdout and "acc mean" in stdout and "accuracy per level" in stdout
    assert (tmp_path / "acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["levels"] == [
        {
            **{k: v for k, v in summary["levels"][0].items() if k.startswith("test_acc")},
            "variant": "dense",
            "config": {},
            "members": 6,
            "sparsity": 0.0,
            "bits": None,
            "rank": None,
        }
    ]
    assert summary["levels"][0]["test_acc_mean"] == dense["test_acc_mean"]
    member = f"tiny-{summary['spec_hash'][:8]}-00002-dense"
    code, stdout, _ = run(capsys, "zoo", "export", str(out), member, "--to", str(tmp_path / "m"))
    assert code == 0 and (tmp_path / "m" / "weights.safetensors").is_file()


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"task": "imagenet"}, "task: unknown task 'imagenet'; valid: cifar10, digits, fashion_mnist, mnist"),
        ({"architecture": "vit"}, "architecture: unknown architecture 'vit'; valid: cnn, mlp"),
        (
            {"variants": ["sparse"]},
            "variants[0].name: unknown variant 'sparse'; valid: dense",
        ),  # sorted list, continues
        ({"members": 0}, "members: must be a positive integer, got 0"),
        ({"hparams": {"lr": -0.5}}, "hparams.lr: must be > 0, got -0.5"),
    ],
)
def test_bad_spec_is_one_line_and_writes_nothing(tmp_path, capsys, overrides, needle):
    cfg = write_spec(tmp_path / "bad.yaml", **overrides)
    out = tmp_path / "zoo"
    code, stdout, err = run(capsys, "zoo", "build", str(cfg), "--out", str(out))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"mole: error: {needle}")
    assert not out.exists()


def test_damaged_zoo_reports_the_file(tmp_path, capsys, tiny_spec_path):
    out = tmp_path / "zoo"
    assert run(capsys, "zoo", "build", str(tiny_spec_path), "--out", str(out), "--progress", "false")[0] == 0
    shard = out / "shards" / "shard-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-10])
    for argv in (["zoo", "info", str(out)], ["zoo", "build", str(tiny_spec_path), "--out", str(out)]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and err.count("\n") == 1
        assert "shard-00001.parquet: sha256 mismatch" in err
    code, _, err = run(capsys, "zoo", "info", str(tmp_path / "nothing"))
    assert code == 2 and "no such zoo folder" in err


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as e:
        main(["zoo", "build", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "--num-shards" in out and "resumes" in out
