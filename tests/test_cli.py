"""The `mole` command: success paths print summaries; bad input is one line, exit 2, nothing written.

Every subcommand's flags come from its stage function's signature and docstring (mole/cli.py).
"""

import dataclasses
import inspect
import json
from pathlib import Path
from typing import get_type_hints

import docstring_parser
import pytest

from mole.cli import COMMANDS, main, parse
from mole.diffusion.options import SampleOptions
from mole.errors import ConfigError
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
    assert e.value.code == 0 and "--num_shards" in out and "resumes" in out


# ---------------------------------------------------------------------------- the parser from signatures
def leaves(commands=COMMANDS, words=()):
    for name, target in commands.items():
        if isinstance(target, dict):
            yield from leaves(target, (*words, name))
        elif name not in ("_help", "train"):  # `mole train --help` is LightningCLI's
            yield " ".join((*words, name)), target


def flags(function) -> dict[str, str]:
    """How each parameter is written on the command line -> its Args text; a dataclass-typed
    parameter's fields stand in for it."""
    docs = {p.arg_name: p.description for p in docstring_parser.parse(inspect.getdoc(function)).params}
    out = {}
    for name, param in inspect.signature(function).parameters.items():
        hint = get_type_hints(function)[name]
        if dataclasses.is_dataclass(hint):
            out |= flags(hint)
        elif param.kind is param.POSITIONAL_OR_KEYWORD and param.default is param.empty:
            out[name] = docs.get(name)  # a positional
        else:
            out[f"--{name}"] = docs.get(name)
    return out


@pytest.mark.parametrize("command,function", list(leaves()))
def test_help_lists_every_flag_with_its_explanation(monkeypatch, capsys, command, function):
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping: each explanation is one run of text
    with pytest.raises(SystemExit) as e:
        main([*command.split(), "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert e.value.code == 0 and " ".join(inspect.getdoc(function).split("Args:")[0].split()) in out
    for flag, text in flags(function).items():
        assert text, f"{flag} has no explanation in the docstring"
        assert f" {flag} " in out and " ".join(text.split()) in out, (flag, text)


def test_the_listing_names_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for line in (
        "zoo  ",
        "train  ",
        "Train a denoiser: mole train CONFIG",
        "baselines  ",
        "Pruning baselines and",
    ):
        assert line in out
    with pytest.raises(SystemExit):
        main(["baselines", "--help"])
    assert "subset-sum tickets" not in (out := capsys.readouterr().out) and "subset-sum  " in out


def test_lists_and_mappings_parse_as_lists_and_mappings(tmp_path):
    run = parse(["baselines", "run", "Z", "--out", "O", "--baselines", "[magnitude,imp]", "--sparsity", "[0.5,0.8]",
                 "--options", '{"imp": {"rounds": 3}}']).baselines.run  # fmt: skip
    assert run.baselines == ["magnitude", "imp"] and run.sparsity == [0.5, 0.8]
    assert run.options == {"imp": {"rounds": 3}}
    run = parse(["baselines", "run", "Z", "--out", "O", "--options.imp", '{"rounds": 3}']).baselines.run
    assert run.options == {"imp": {"rounds": 3}} and run.baselines == (
        "magnitude",
        "random",
        "imp",
        "edge_popup",
    )
    ss = parse(["baselines", "subset-sum", "--out", "O", "--n", "[4,8,12]", "--hidden", "[32]"]).baselines
    assert ss["subset-sum"].n == [4, 8, 12] and ss["subset-sum"].hidden == [32]
    s = parse(["sample", "M", "--out", "O", "--conditions.test_acc", "0.95", "--conditions.variant", "dense",
               "--project", '{"sparsity": 0.8}']).sample  # fmt: skip
    assert s.conditions == {"test_acc": 0.95, "variant": "dense"} and s.project == {"sparsity": 0.8}
    assert parse(["sample", "M", "--out", "O", "--conditions", '{"test_acc": 0.9}']).sample.conditions == {
        "test_acc": 0.9
    }
    assert parse(["theory", "rss", "--n", "[4,8]", "--eps", "[0.1]", "--bits", "[null,4]"]).theory.rss.n == [
        4,
        8,
    ]
    # a YAML file of the same flags
    (tmp_path / "npp.yaml").write_text("n: [8, 12]\ntrials: 5\nkappa_max: 1.2\n")
    npp = parse(["theory", "npp", "--config", str(tmp_path / "npp.yaml"), "--trials", "7"]).theory.npp
    assert (npp.n, npp.trials, npp.kappa_max) == ([8, 12], 7, 1.2)


def test_bare_booleans_and_dashed_flags():
    assert parse(["zoo", "info", "Z", "--json"]).zoo.info.json is True
    assert parse(["zoo", "info", "Z", "--json", "false"]).zoo.info.json is False
    assert parse(["zoo", "info", "Z"]).zoo.info.json is False
    build = parse(
        ["zoo", "build", "S", "--num-shards", "2", "--shard-index=1", "--progress", "false"]
    ).zoo.build
    assert (build.spec, build.num_shards, build.shard_index, build.progress) == ("S", 2, 1, False)
    assert parse(["sample", "M", "--out", "O", "--batch-size", "8", "--progress"]).sample.batch_size == 8


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["theory", "rss", "--trials", "x"], "trials: Expected a <class 'int'>. Got value: x; see mole theory rss --help"),
        (["theory", "rss", "--n", "4,8"], "n: Expected a <class 'collections.abc.Sequence'>. Got value: 4,8;"),
        (["zoo", "info", "Z", "--foo", "1"], "unrecognized arguments: --foo 1; see mole zoo info --help"),
        (["zoo", "build", "S", "--accelerator", "gpu"], "accelerator: Expected a typing.Literal['auto', 'cpu', 'cuda']"),
        (["zoo", "export", "Z", "M"], "the following arguments are required: zoo.export.to;"),
        (["sample", "M", "--out", "O", "--conditions", '{"test_acc": '], "conditions: Expected a <class 'dict'> (given"),
        (["sample", "M", "--out", "O", "--seed", "1.5"], "seed: Expected a <class 'int'>. Got value: 1.5;"),
        (["baselines", "run", "Z", "--out", "O", "--group_size", "x"], "group_size: Expected a <class 'int'> (given x);"),
        (["eval", "--run", "R", "--wandb", "maybe"], "wandb: Expected a typing.Literal['offline', 'online', 'disabled']"),
        ([], 'expected "command" to be one of {zoo,quickstart,eval,train,sample, ...}'),
    ],
)  # fmt: skip
def test_bad_flags_are_one_line_naming_the_field(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mole: error: {needle}") and err.count("\n") == 1, err


def test_sample_passes_its_flags_on(monkeypatch, tmp_path, capsys):
    calls = []

    def generate_zoo(model, out, conditions, num, options, context=None, context_ref=None, project=None,
                     on_step=None):  # fmt: skip
        calls.append(dict(locals()))
        return Path(out), True

    monkeypatch.setattr("mole.commands.generate_zoo", generate_zoo)
    argv = ["sample", "M", "--out", str(tmp_path), "--conditions.test_acc", "0.9", "--num", "2", "--steps", "3",
            "--guidance", "2", "--seed", "7", "--batch-size", "8", "--temperature", "0.5", "--scope", "layerwise",
            "--project.sparsity", "0.8", "--progress", "false"]  # fmt: skip
    assert main(argv) == 0 and f"sampled 2 network(s) -> {tmp_path}" in capsys.readouterr().out
    (call,) = calls
    assert {k: call[k] for k in ("model", "conditions", "num", "context", "context_ref", "on_step", "project")} == {
        "model": "M", "conditions": {"test_acc": 0.9}, "num": 2, "context": None, "context_ref": None, "on_step": None,
        "project": {"sparsity": 0.8},
    }  # fmt: skip
    assert call["options"] == SampleOptions(
        steps=3, guidance=2.0, seed=7, batch_size=8, temperature=0.5, scope="layerwise"
    )
    assert main(["sample", "M", "--out", str(tmp_path)]) == 0  # defaults: an empty prompt, no projection
    assert (
        calls[1]["conditions"] == {} and calls[1]["project"] == {} and calls[1]["options"] == SampleOptions()
    )


def test_interrupt_is_130_and_train_passes_through(monkeypatch, capsys):
    def interrupted(run, wandb, on_part=None):
        raise KeyboardInterrupt

    monkeypatch.setattr("mole.commands.report_from_run", interrupted)
    assert main(["eval", "--run", "R"]) == 130
    assert capsys.readouterr().err == "mole: interrupted (rerun the same command to resume)\n"
    seen = []

    def cli_main(argv):
        seen.append(argv)
        raise ConfigError("target", "unknown 'biases'; valid: weights, mask")

    monkeypatch.setattr("mole.diffusion.train.cli_main", cli_main)
    assert main(["train", "c.yaml", "--trainer.max_epochs", "1", "--data.target", "biases"]) == 2
    assert seen == [["c.yaml", "--trainer.max_epochs", "1", "--data.target", "biases"]]
    assert capsys.readouterr().err == "mole: error: target: unknown 'biases'; valid: weights, mask\n"
