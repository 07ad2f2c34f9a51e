"""The `mole` command: every subcommand is parsed by jsonargparse from a typed stage function.

COMMANDS maps each subcommand to its stage function (a nested dict for a group, its "_help" the group's
text). A stage function's docstring is its subcommand's help: the first line in the listing, the text
before Args as the description, each Args entry as its flag's explanation. Required parameters are
positionals, keyword-only ones without a default required flags, and a parameter typed as a dataclass
contributes its fields as flags of their own (`--steps`, not `--options.steps`). Every subcommand also
reads its flags from a YAML file (--config) and writes them as one (--print_config). `mole train` goes to
LightningCLI unparsed. Nothing imports this module.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from argparse import ArgumentError
from collections.abc import Callable
from typing import Any, get_type_hints

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from mole.baselines.commands import run_command, subset_sum_command
from mole.commands import (
    bench_learn,
    bench_matrix,
    bench_prompts,
    bench_structure,
    evaluate,
    quickstart,
    sample,
    train,
    zoo_build,
    zoo_export,
    zoo_info,
)
from mole.errors import MoleError
from mole.theory.commands import npp_command, rss_command

# ---------------------------------------------------------------------------- the command table
COMMANDS: dict[str, Any] = {
    "zoo": {
        "_help": "Build, inspect and export checkpoint zoos.",
        "build": zoo_build,
        "info": zoo_info,
        "export": zoo_export,
    },
    "quickstart": quickstart,
    "eval": evaluate,
    "train": train,
    "sample": sample,
    "bench": {
        "_help": "Benchmarks over many runs.",
        "matrix": bench_matrix,
        "learn": bench_learn,
        "prompts": bench_prompts,
        "structure": bench_structure,
    },
    "theory": {
        "_help": "Random subset sum and number partitioning experiments.\n\nExperiments behind the strong "
        "lottery ticket proofs: random subset sum (Lueker 1998, Pensia et al. 2020) and the number "
        "partitioning phase transition (Mertens; Borgs, Chayes & Pittel 2001).",
        "rss": rss_command,
        "npp": npp_command,
    },
    "baselines": {
        "_help": "Pruning baselines and subset-sum lottery tickets.\n\nPruning baselines at matched "
        "sparsity (magnitude, random, IMP, edge-popup) and the subset-sum strong-lottery-ticket "
        "construction (Pensia et al. 2020).",
        "run": run_command,
        "subset-sum": subset_sum_command,
    },
}
DESCRIPTION = (
    "mole: build checkpoint zoos of small networks (dense, pruned, quantized, low-rank, supermasks), "
    "tokenize them, and learn to generate weights and masks."
)


# ---------------------------------------------------------------------------- parser
def build_parser(commands: dict[str, Any] = COMMANDS) -> ArgumentParser:
    """The `mole` parser: one subcommand per stage function in `commands`, its flags from the signature.

    Args:
        commands: name -> stage function, or name -> a dict of the same shape (a group of subcommands).
    """
    parser = ArgumentParser(prog="mole", description=DESCRIPTION, exit_on_error=False)
    _add_commands(parser, commands)
    return parser


def _add_commands(parser: ArgumentParser, commands: dict[str, Any]) -> None:
    subcommands = parser.add_subcommands(dest="command")
    for name, target in commands.items():
        if name == "_help":
            continue
        text = target["_help"] if isinstance(target, dict) else _description(target)
        sub = ArgumentParser(description=text, exit_on_error=False)
        subcommands.add_subcommand(name, sub, help=text.split("\n")[0])
        if isinstance(target, dict):
            _add_commands(sub, target)
        else:
            _add_signature(sub, target)


def _description(function: Callable) -> str:
    """A docstring without its Args section."""
    return (inspect.getdoc(function) or "").split("\nArgs:")[0].strip()


def _groups(function: Callable) -> dict[str, type]:
    """The parameters typed as a dataclass: name -> class."""
    return {k: t for k, t in get_type_hints(function).items() if dataclasses.is_dataclass(t)}


def _add_signature(parser: ArgumentParser, function: Callable) -> None:
    parser.add_argument(
        "--config",
        action=ActionConfigFile,
        help="a YAML file of this command's flags, keyed as --print_config writes them",
    )
    groups = _groups(function)
    parser.add_function_arguments(function, as_group=False, as_positional=True, skip=set(groups))
    bools = {k for k, t in get_type_hints(function).items() if t is bool}
    for cls in groups.values():
        parser.add_class_arguments(cls)
        bools |= {f.name for f in dataclasses.fields(cls) if get_type_hints(cls)[f.name] is bool}
    for action in parser._actions:  # a bare `--json` means `--json true`, as argparse's store_true did
        if action.dest in bools:
            action.nargs, action.const = "?", True


def _call(commands: dict[str, Any], cfg: Namespace) -> int:
    """Run the stage function that `cfg` (a parsed namespace) names, with its parsed arguments."""
    target = commands
    while isinstance(target, dict):
        target, cfg = target[cfg.command], cfg[cfg.command]
    kwargs = cfg.as_dict()
    kwargs.pop("config", None)
    for name, cls in _groups(target).items():
        kwargs[name] = cls(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(cls)})
    return target(**kwargs)


def parse(argv: list[str]) -> Namespace:
    """Parse `mole ARGV` (not `mole train`) into a namespace; bad input raises argparse.ArgumentError."""
    return build_parser().parse_args(_underscored(argv))


def _underscored(argv: list[str]) -> list[str]:
    """`--num-shards 2` -> `--num_shards 2`: flags are named after the parameters; dashes still work."""
    return [re.sub(r"^--[^=.]+", lambda m: m[0][:2] + m[0][2:].replace("-", "_"), a) for a in argv]


def _one_line(error: ArgumentError) -> str:
    """jsonargparse's message on one line, "field: expected ..."; an Optional's None alternative left out."""
    text = str(error).strip()
    key = re.match(r'Parser key "([^"]+)":', text)
    if key and "Union subtypes" in text:
        expected = [e for e in re.findall(r"^\s+- (.+)$", text, re.M) if "NoneType" not in e]
        given = re.search(r"Given value: (.*)\Z", text, re.S)
        text = f"{key[1]}: {'; '.join(expected)}" + (f" (given {given[1]})" if given else "")
    elif key:
        text = f"{key[1]}:{text[key.end() :]}"
    return " ".join(text.split())


def _help_hint(argv: list[str], commands: dict[str, Any] = COMMANDS) -> str:
    """`mole zoo info --help` for argv ['zoo', 'info', ...]: where the failed command's flags are listed."""
    words = ["mole"]
    for word in argv:
        if not isinstance(commands, dict) or word not in commands:
            break
        words.append(word)
        commands = commands[word]
    return " ".join([*words, "--help"])


def run_script(function, name: str, argv: list[str] | None = None) -> int:
    """A benchmark script's command line: `function`'s arguments as flags (jsonargparse's auto_cli);
    0, or 2 with one line "NAME: error: ..." on stderr for bad input (a MoleError), as `mole` answers."""
    from jsonargparse import auto_cli

    try:
        auto_cli(function, args=argv)
    except MoleError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2
    return 0


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Run `mole ARGV`; returns the exit code (2 on bad input, with one line on stderr; 130 on Ctrl-C)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["train"]:  # LightningCLI parses the rest itself (--config, --trainer.*, --help)
            return train(*argv[1:])
        try:
            cfg = parse(argv)
        except ArgumentError as e:
            print(f"mole: error: {_one_line(e)}; see {_help_hint(argv)}", file=sys.stderr)
            return 2
        return _call(COMMANDS, cfg)
    except MoleError as e:
        print(f"mole: error: {e}", file=sys.stderr)
        return 2
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as e:  # an output path that is a file
        print(f"mole: error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mole: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
