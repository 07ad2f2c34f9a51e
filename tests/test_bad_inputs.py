"""Bad inputs across commands: each is exit code 2, exactly one line on stderr with no traceback, an
error that names the field or file, and the input folder byte-identical before and after.

Each row of a table is one distinct bad input: a name, how to damage a copy of a good input, the
command to run on it and the text the error must hold.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mole.cli import main
from mole.errors import StoreError
from mole.tokenizer.persist import REFERENCE_FILE, STATS_FILE, read_reference, read_stats, write_tokenizer
from mole.zoo.export import load_exported
from mole.zoo.store import load_manifest, sha256_file
from tests.conftest import TINY_ZOO, write_spec
from tests.tokenizer.helpers import tiny_zoo

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "diffusion" / "digits_tiny.yaml"


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `folder` (what "byte-identical" compares)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def truncate(path: Path, by: int = 1) -> None:
    path.write_bytes(path.read_bytes()[:-by])


def assert_one_line_error(capsys, argv: list[str], folder: Path, needle: str) -> None:
    """Run `mole ARGV`: exit 2, one stderr line naming `needle`, no traceback, `folder` unchanged."""
    before = snapshot(folder)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("mole: error: "), err
    assert "Traceback" not in err
    assert needle in err, err
    assert snapshot(folder) == before


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    return tiny_zoo(tmp_path_factory)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("datasets-cache"))


def train_argv(zoo: Path, cache: str, run_dir: Path, *extra: str) -> list[str]:
    return [
        "train", str(CONFIG), "--data.zoo", str(zoo), "--data.cache_dir", cache, "--run_dir", str(run_dir),
        "--trainer.accelerator", "cpu", "--trainer.max_steps", "1", *extra,
    ]  # fmt: skip


def _not_a_zoo(zoo: Path) -> None:
    shutil.rmtree(zoo)
    zoo.mkdir()
    (zoo / "notes.txt").write_text("not a zoo\n")


def _manifest_truncated(zoo: Path) -> None:
    truncate(zoo / "manifest.json", by=3)  # its last two bytes are "}\n": one byte off is still JSON


def _shard_truncated(zoo: Path) -> None:
    truncate(zoo / "shards" / "shard-00000.parquet")


def _shard_missing(zoo: Path) -> None:
    (zoo / "shards" / "shard-00001.parquet").unlink()


# name -> (damage a copy of the tiny zoo, text the error must hold)
TRAIN_ON_BAD_ZOO: dict[str, tuple[Callable[[Path], None], str]] = {
    "not a zoo": (_not_a_zoo, "manifest.json: missing"),
    "truncated manifest": (_manifest_truncated, "manifest.json: corrupt"),
    "truncated shard": (_shard_truncated, "shard-00000.parquet: sha256 mismatch"),
    "missing shard": (_shard_missing, "shard-00001.parquet: shard"),
}


@pytest.mark.parametrize("name", list(TRAIN_ON_BAD_ZOO))
def test_train_on_a_bad_zoo(zoo, cache, tmp_path, capsys, name):
    damage, needle = TRAIN_ON_BAD_ZOO[name]
    bad = tmp_path / "zoo"
    shutil.copytree(zoo, bad)
    damage(bad)
    assert_one_line_error(capsys, train_argv(bad, cache, tmp_path / "run"), bad, needle)
    assert not (tmp_path / "run").exists()


def test_train_on_a_missing_zoo(cache, tmp_path, capsys):
    missing = tmp_path / "nothing"
    assert_one_line_error(
        capsys, train_argv(missing, cache, tmp_path / "run"), tmp_path, "no such zoo folder"
    )
    assert not missing.exists() and not (tmp_path / "run").exists()


def test_train_unwraps_an_error_raised_inside_argument_linking(zoo, cache, tmp_path, capsys):
    """The data module's setup runs inside jsonargparse's argument link, which wraps what it raises in a
    ValueError; the MoleError comes out, one line. (The `datasets` progress line before it is the
    cache being written, not part of the error.)"""
    before = snapshot(zoo)
    assert main(train_argv(zoo, cache, tmp_path / "run", "--data.variants", "[sparse]")) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "mole: error: variants: ['sparse'] not in this zoo; it holds ['dense']"
    assert "Traceback" not in err and "compute_fn" not in err
    assert snapshot(zoo) == before and not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- damaged model folders
@pytest.fixture(scope="module")
def model(zoo, cache, tmp_path_factory) -> Path:
    """A model folder from one training step on the tiny zoo."""
    run_dir = tmp_path_factory.mktemp("model-run") / "run"
    assert main(train_argv(zoo, cache, run_dir, "--wandb", "disabled")) == 0
    return run_dir / "model"


# name -> (file in the model folder, bytes cut off its end): each damage on its own copy
DAMAGED_MODEL: dict[str, tuple[str, int]] = {
    "truncated denoiser weights": ("denoiser/diffusion_pytorch_model.safetensors", 1),
    "truncated denoiser config": ("denoiser/config.json", 3),
    "truncated scheduler config": ("scheduler/scheduler_config.json", 3),
    "truncated tokenizer stats": ("tokenizer/stats.safetensors", 1),
    "truncated tokenizer.json": ("tokenizer/tokenizer.json", 3),
    "truncated mole.json": ("mole.json", 3),  # JSON files end in "}\n": one byte off still parses
}


@pytest.mark.parametrize("name", list(DAMAGED_MODEL))
def test_sample_from_a_damaged_model_folder(model, tmp_path, capsys, name):
    file, cut = DAMAGED_MODEL[name]
    bad = tmp_path / "model"
    shutil.copytree(model, bad)
    truncate(bad / file, by=cut)
    out = tmp_path / "generated"
    argv = ["sample", str(bad), "--out", str(out), "--num", "2", "--progress", "false"]
    assert_one_line_error(capsys, argv, bad, f"{bad / file}: corrupt")
    assert not out.exists()


def test_an_exported_member_with_truncated_weights(zoo, tmp_path, capsys):
    member = f"tiny-{load_manifest(zoo)['spec_hash'][:8]}-00002-dense"
    assert main(["zoo", "export", str(zoo), member, "--to", str(tmp_path / "m")]) == 0
    weights = tmp_path / "m" / "weights.safetensors"
    truncate(weights)
    before = snapshot(tmp_path / "m")
    with pytest.raises(StoreError) as e:
        load_exported(tmp_path / "m")
    assert str(e.value).startswith(f"{weights}: corrupt member weights") and "\n" not in str(e.value)
    assert snapshot(tmp_path / "m") == before


@pytest.mark.parametrize("file", [STATS_FILE, REFERENCE_FILE])
def test_a_saved_tokenizer_with_a_truncated_tensor_file(tmp_path, file):
    folder = write_tokenizer(
        tmp_path / "tok",
        {"name": "neuron"},
        {"params/w": {"mean": torch.zeros(3), "std": torch.ones(3)}},
        {"w": torch.ones(2, 2)},
    )
    truncate(folder / file)
    before = snapshot(folder)
    with pytest.raises(StoreError) as e:
        (read_stats if file == STATS_FILE else read_reference)(folder)
    assert str(e.value).startswith(f"{folder / file}: corrupt tokenizer") and "\n" not in str(e.value)
    assert snapshot(folder) == before


# ---------------------------------------------------------------------------- tampered shards
def _tamper(zoo: Path, change: Callable[[pa.Table], pa.Table]) -> Path:
    """Rewrite shard 0 through `change` and put its new hash in the manifest, as a careful forger would."""
    shard = zoo / "shards" / "shard-00000.parquet"
    pq.write_table(change(pq.read_table(shard)), shard)
    manifest = json.loads((zoo / "manifest.json").read_text())
    manifest["shards"]["shard-00000"]["sha256"] = sha256_file(shard)
    (zoo / "manifest.json").write_text(json.dumps(manifest))
    return shard


def _retyped(table: pa.Table, name: str, type_: pa.DataType) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, table[name].cast(type_))


# name -> (how shard 0's table is changed, what the error says about it)
TAMPERED_SHARD: dict[str, tuple[Callable[[pa.Table], pa.Table], str]] = {
    "a metadata column dropped": (lambda t: t.drop_columns(["extra"]), "column extra is missing"),
    "a metric column dropped": (lambda t: t.drop_columns(["test_acc"]), "column test_acc is missing"),
    "a column retyped": (
        lambda t: _retyped(t, "step", pa.float64()),
        "column step is double, expected int64",
    ),
    "a column added": (
        lambda t: t.append_column("backdoor", pa.array([1] * len(t))),
        "columns ['backdoor'] are not in it",
    ),
}


@pytest.mark.parametrize("command", ["info", "export"])
@pytest.mark.parametrize("name", list(TAMPERED_SHARD))
def test_a_tampered_shard_with_a_matching_hash(zoo, tmp_path, capsys, name, command):
    change, problem = TAMPERED_SHARD[name]
    bad = tmp_path / "zoo"
    shutil.copytree(zoo, bad)
    shard = _tamper(bad, change)
    member = f"tiny-{load_manifest(bad)['spec_hash'][:8]}-00000-dense"  # a member of shard 0
    argv = {
        "info": ["zoo", "info", str(bad)],
        "export": ["zoo", "export", str(bad), member, "--to", str(tmp_path / "m")],
    }
    assert_one_line_error(
        capsys, argv[command], bad, f"{shard}: shard does not match the zoo schema ({problem}"
    )
    assert not (tmp_path / "m").exists()


def _short_params(table: pa.Table) -> pa.Table:
    """Every row's params one value short: the schema holds, the network does not fit."""
    params = pa.array([p[:-1] for p in table["params"].to_pylist()], pa.list_(pa.float32()))
    return table.set_column(table.schema.get_field_index("params"), "params", params)


def test_export_of_a_row_that_does_not_fit_its_network_writes_nothing(zoo, tmp_path, capsys):
    bad = tmp_path / "zoo"
    shutil.copytree(zoo, bad)
    _tamper(bad, _short_params)
    member = f"tiny-{load_manifest(bad)['spec_hash'][:8]}-00000-dense"
    argv = ["zoo", "export", str(bad), member, "--to", str(tmp_path / "m")]
    assert_one_line_error(capsys, argv, bad, f"member {member} step ")
    assert not (tmp_path / "m").exists()


def test_export_into_an_existing_folder_keeps_its_other_files(zoo, tmp_path, capsys):
    to = tmp_path / "m"
    to.mkdir()
    (to / "notes.txt").write_text("mine\n")
    member = f"tiny-{load_manifest(zoo)['spec_hash'][:8]}-00000-dense"
    assert main(["zoo", "export", str(zoo), member, "--to", str(to)]) == 0
    assert sorted(p.name for p in to.iterdir()) == ["meta.json", "notes.txt", "weights.safetensors"]
    assert (to / "notes.txt").read_text() == "mine\n"


# ---------------------------------------------------------------------------- bad CLI values and spec fields
def _spec(tmp: Path, **overrides) -> str:
    return str(write_spec(tmp / "spec.yaml", **overrides))


def _text(tmp: Path, name: str, text: str) -> str:
    (tmp / name).write_text(text)
    return str(tmp / name)


_LR = TINY_ZOO["hparams"]["lr"]

# name -> (argv from a scratch folder, text the error must hold); nothing but the scratch folder is read
BAD_ARGV: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "build: unknown task": (lambda t: ["zoo", "build", _spec(t, task="nope"), "--out", str(t / "o")], "task: unknown task 'nope'"),
    "build: unknown architecture": (lambda t: ["zoo", "build", _spec(t, architecture="nope"), "--out", str(t / "o")], "architecture: unknown architecture"),
    "build: unknown variant": (lambda t: ["zoo", "build", _spec(t, variants=["nope"]), "--out", str(t / "o")], "variants[0].name: unknown variant"),
    "build: negative members": (lambda t: ["zoo", "build", _spec(t, members=-1), "--out", str(t / "o")], "members: must be a positive integer"),
    "build: zero group size": (lambda t: ["zoo", "build", _spec(t, group_size=0), "--out", str(t / "o")], "group_size: must be a positive integer"),
    "build: zero snapshot interval": (lambda t: ["zoo", "build", _spec(t, snapshots={"every": 0}), "--out", str(t / "o")], "snapshots.every:"),
    "build: inverted lr range": (lambda t: ["zoo", "build", _spec(t, hparams={**TINY_ZOO["hparams"], "lr": {**_LR, "low": 0.2, "high": 0.02}}), "--out", str(t / "o")], "hparams.lr: low 0.2 > high 0.02"),
    "build: negative log lr": (lambda t: ["zoo", "build", _spec(t, hparams={**TINY_ZOO["hparams"], "lr": {**_LR, "low": -1.0}}), "--out", str(t / "o")], "hparams.lr: a log range needs low > 0"),
    "build: unknown spec field": (lambda t: ["zoo", "build", _spec(t, bogus=1), "--out", str(t / "o")], "bogus: unknown field"),
    "build: missing spec file": (lambda t: ["zoo", "build", str(t / "none.yaml"), "--out", str(t / "o")], "none.yaml"),
    "build: YAML syntax error": (lambda t: ["zoo", "build", _text(t, "bad.yaml", "name: [unclosed\n"), "--out", str(t / "o")], "bad.yaml is not valid YAML"),
    "build: non-mapping YAML": (lambda t: ["zoo", "build", _text(t, "list.yaml", "- a\n- b\n"), "--out", str(t / "o")], "list.yaml must hold a mapping"),
    "info: missing folder": (lambda t: ["zoo", "info", str(t / "nozoo")], "nozoo: no such zoo folder"),
    "export: missing folder": (lambda t: ["zoo", "export", str(t / "nozoo"), "x", "--to", str(t / "m")], "nozoo: no such zoo folder"),
    "rss: n 0": (lambda t: ["theory", "rss", "--out", str(t / "o"), "--n", "[0]"], "n: must be a non-empty list of positive integers"),
    "rss: eps 0": (lambda t: ["theory", "rss", "--out", str(t / "o"), "--eps", "[0]"], "eps: must be a non-empty list of positive numbers"),
    "rss: bits 0": (lambda t: ["theory", "rss", "--out", str(t / "o"), "--bits", "[0]"], "bits: unsupported bit-width"),
    "rss: trials 0": (lambda t: ["theory", "rss", "--out", str(t / "o"), "--trials", "0"], "trials: must be >= 1"),
    "rss: one target": (lambda t: ["theory", "rss", "--out", str(t / "o"), "--targets", "1"], "targets: must be >= 2"),
    "rss: n not a list": (lambda t: ["theory", "rss", "--out", str(t / "o"), "--n", "0"], "n: "),
    "npp: n 0": (lambda t: ["theory", "npp", "--out", str(t / "o"), "--n", "[0]"], "n: must be a non-empty list of positive integers"),
    "npp: negative trials": (lambda t: ["theory", "npp", "--out", str(t / "o"), "--trials", "-1"], "trials: must be >= 1"),
    "npp: inverted kappa range": (lambda t: ["theory", "npp", "--out", str(t / "o"), "--kappa_min", "5", "--kappa_max", "1"], "kappa_min: need 0 < kappa_min <= kappa_max"),
    "subset-sum: n 0": (lambda t: ["baselines", "subset-sum", "--out", str(t / "o"), "--n", "[0]"], "n: must be an integer in [1, 40]"),
    "subset-sum: n 41": (lambda t: ["baselines", "subset-sum", "--out", str(t / "o"), "--n", "[41]"], "n: must be an integer in [1, 40]"),
    "subset-sum: missing zoo": (lambda t: ["baselines", "subset-sum", "--out", str(t / "o"), "--zoo", str(t / "nozoo"), "--n", "[4]"], "nozoo: no such zoo folder"),
    "baselines: missing zoo": (lambda t: ["baselines", "run", str(t / "nozoo"), "--out", str(t / "o")], "nozoo: no such zoo folder"),
    "quickstart: unknown preset": (lambda t: ["quickstart", "--out", str(t / "o"), "--preset", "nope"], "preset: unknown 'nope'"),
    "quickstart: missing recipe folder": (lambda t: ["quickstart", "--out", str(t / "o"), "--preset", "tiny", "--recipe", str(t / "norecipe")], "recipe: "),
    "bench: missing matrix file": (lambda t: ["bench", "matrix", "--matrix", str(t / "none.yaml"), "--out", str(t / "o")], "matrix: no such file"),
    "bench: matrix without seeds": (lambda t: ["bench", "matrix", "--matrix", _text(t, "m.yaml", "cells: 3\n"), "--out", str(t / "o")], "seeds: missing in"),
    "bench: matrix YAML syntax error": (lambda t: ["bench", "matrix", "--matrix", _text(t, "m.yaml", "cells: [\n"), "--out", str(t / "o")], "not valid YAML"),
    "eval: --run with --out": (lambda t: ["eval", "--run", str(t), "--out", str(t / "o")], "--run rewrites a quickstart run's report: give it alone"),
    "eval: --run on an unfinished run": (lambda t: ["eval", "--run", str(t)], "is not a finished quickstart run"),
    "rss: --out is a file": (lambda t: ["theory", "rss", "--out", str(t / "keep.txt"), "--n", "[4]", "--eps", "[0.1]", "--trials", "2"], "keep.txt: File exists"),
    "npp: --out is a file": (lambda t: ["theory", "npp", "--out", str(t / "keep.txt"), "--n", "[4]", "--trials", "2"], "keep.txt: File exists"),
    "sample: missing model folder": (lambda t: ["sample", str(t / "nomodel"), "--out", str(t / "o")], "nomodel: not a mole model folder"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(BAD_ARGV))
def test_a_bad_cli_value(tmp_path, capsys, name):
    argv, needle = BAD_ARGV[name]
    (tmp_path / "keep.txt").write_text("mine\n")  # so an empty folder's snapshot is not trivially equal
    assert_one_line_error(capsys, argv(tmp_path), tmp_path, needle)
    assert not (tmp_path / "o").exists()


def _member(zoo: Path, index: int = 0) -> str:
    return f"tiny-{load_manifest(zoo)['spec_hash'][:8]}-{index:05d}-dense"


def _variant_spec(tmp: Path, name: str, **options) -> str:
    return _spec(tmp, variants=["dense", {"name": name, "options": options}])


# name -> (argv from the tiny zoo and an output path, text the error must hold); the zoo stays unchanged
BAD_ON_ZOO: dict[str, tuple[Callable[[Path, Path], list[str]], str]] = {
    "build: sparsity 1.5": (lambda z, o: ["zoo", "build", _variant_spec(o.parent, "magnitude", sparsity=[1.5]), "--out", str(o)], "variants.magnitude.sparsity: must be in [0, 1)"),
    "build: 1-bit weights": (lambda z, o: ["zoo", "build", _variant_spec(o.parent, "quantized", bits=[1]), "--out", str(o)], "variants.quantized.bits: unsupported bit-width 1"),
    "build: 99-bit weights": (lambda z, o: ["zoo", "build", _variant_spec(o.parent, "quantized", bits=[99]), "--out", str(o)], "variants.quantized.bits: unsupported bit-width 99"),
    "export: unknown member": (lambda z, o: ["zoo", "export", str(z), "tiny-nope", "--to", str(o)], "member: no member 'tiny-nope'"),
    "export: step with no snapshot": (lambda z, o: ["zoo", "export", str(z), _member(z), "--to", str(o), "--step", "12345"], "step: member "),
    "export: negative step": (lambda z, o: ["zoo", "export", str(z), _member(z), "--to", str(o), "--step", "-1"], "no snapshot at step -1"),
    "info: --plot under a file": (lambda z, o: ["zoo", "info", str(z), "--plot", str(_text(o.parent, "f", "x")) + "/x.png"], "f: File exists"),
    "export: --to is a file": (lambda z, o: ["zoo", "export", str(z), _member(z), "--to", _text(o.parent, "f", "x")], "f: File exists"),
    "baselines: unknown baseline": (lambda z, o: ["baselines", "run", str(z), "--out", str(o), "--baselines", "[nope]"], "baselines: unknown baseline 'nope'"),
    "baselines: unknown option": (lambda z, o: ["baselines", "run", str(z), "--out", str(o), "--baselines", "[imp]", "--options", '{"imp": {"bogus": 3}}'], "baselines.imp.bogus: unknown option"),
    "baselines: options for a baseline not run": (lambda z, o: ["baselines", "run", str(z), "--out", str(o), "--options", '{"nope": {"rounds": 3}}'], "options.nope: not among --baselines"),
    "baselines: sparsity 1": (lambda z, o: ["baselines", "run", str(z), "--out", str(o), "--sparsity", "[1.0]"], "sparsity: must be in [0, 1), got 1.0"),
    "baselines: negative sparsity": (lambda z, o: ["baselines", "run", str(z), "--out", str(o), "--sparsity", "[-0.1]"], "sparsity: must be in [0, 1), got -0.1"),
    "baselines: sparsity not a list": (lambda z, o: ["baselines", "run", str(z), "--out", str(o), "--sparsity", "1.0"], "sparsity: "),
    "baselines: unknown variant": (lambda z, o: ["baselines", "run", str(z), "--out", str(o), "--variant", "nope"], "variant: no 'nope' rows"),
    "baselines: zero group size": (lambda z, o: ["baselines", "run", str(z), "--out", str(o), "--group_size", "0"], "group_size: must be a positive integer"),
    "subset-sum: unknown member": (lambda z, o: ["baselines", "subset-sum", "--out", str(o), "--zoo", str(z), "--member", "tiny-nope", "--n", "[4]"], "member: no final row of 'tiny-nope'"),
    "eval: generated is not a zoo": (lambda z, o: ["eval", "--generated", f"[{o.parent}]", "--reference", str(z), "--out", str(o)], "generated: "),
    "eval: reference is not a zoo": (lambda z, o: ["eval", "--generated", f"[{z}]", "--reference", str(o.parent), "--out", str(o)], "reference: "),
    "eval: no --out": (lambda z, o: ["eval", "--generated", f"[{z}]", "--reference", str(z)], "out: give the report's folder"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(BAD_ON_ZOO))
def test_a_bad_input_on_a_good_zoo(zoo, tmp_path, capsys, name):
    argv, needle = BAD_ON_ZOO[name]
    out = tmp_path / "o"
    assert_one_line_error(capsys, argv(zoo, out), zoo, needle)
    assert not out.exists()


# name -> (extra `mole sample` flags, text the error must hold); the model folder stays unchanged
BAD_SAMPLE: dict[str, tuple[list[str], str]] = {
    "unknown condition": (["--conditions", '{"bogus": 1}'], "conditions.bogus: unknown condition"),
    "accuracy outside the trained range": (["--conditions", '{"test_acc": 5}'], "conditions.test_acc: 5 is outside"),
    "unknown variant condition": (["--conditions", '{"variant": "nope"}'], "conditions.variant: unknown value 'nope'"),
    "steps 0": (["--steps", "0"], "steps: must be a positive integer"),
    "temperature 3": (["--temperature", "3"], "temperature: must be a number in [0, 2]"),
    "unknown scope": (["--scope", "nope"], "scope: unknown 'nope'"),
    "unknown init scheme": (["--init_scheme", "nope"], "init_scheme: unknown 'nope'"),
    "project onto an unknown level": (["--project", '{"nope": 0.5}'], "project.nope: cannot be projected onto"),
    "project onto sparsity 1.5": (["--project", '{"sparsity": 1.5}'], "project.sparsity: must be in [0, 1)"),
    "--init_zoo without --init_member": (["--init_zoo", "/nonexistent"], "init_member: --init_zoo and --init_member come together"),
    "project onto 3 bits": (["--project", '{"bits": 3}'], "project.bits: unsupported bit-width 3"),
    "project onto a negative rank": (["--project", '{"rank": -1}'], "project.rank: must be a non-negative integer"),
    "num 0": (["--num", "0"], "num: must be a positive integer"),
    "batch size 0": (["--batch_size", "0"], "batch_size: must be a positive integer"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(BAD_SAMPLE))
def test_a_bad_sample_option(model, tmp_path, capsys, name):
    extra, needle = BAD_SAMPLE[name]
    out = tmp_path / "generated"
    argv = ["sample", str(model), "--out", str(out), "--num", "2", "--progress", "false", *extra]
    assert_one_line_error(capsys, argv, model, needle)
    assert not out.exists()
