"""Saving and loading tokenizers: `tokenizer.json` (TOKENIZERS name, options, architecture) plus
`stats.safetensors` (the fitted statistics) and, for canonical="match", `reference.safetensors` (the
params members are matched to), each written to a temporary name and renamed."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mole.errors import ConfigError
from mole.io import atomic_path
from mole.tokenizer.base import Tokenizer

CONFIG_FILE = "tokenizer.json"
STATS_FILE = "stats.safetensors"
REFERENCE_FILE = "reference.safetensors"
FORMAT = 1


def save_tokenizer(tok: Tokenizer, path: Path) -> Path:
    """Write `tok` into folder `path` (created); the statistics first, the config that names them last."""
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "format": FORMAT,
        "tokenizer": tok.name,
        "options": tok.options(),
        "architecture": tok.architecture,
        "arch_config": tok.arch_config,
        "fitted": tok.stats is not None,
    }
    if tok.stats is not None:
        flat = {f"{k}/{s}": v.contiguous() for k, d in tok.stats.items() for s, v in d.items()}
        with atomic_path(path / STATS_FILE) as tmp:
            save_file(flat, str(tmp))
    if tok.reference is not None:
        with atomic_path(path / REFERENCE_FILE) as tmp:
            save_file({k: v.contiguous() for k, v in tok.reference.items()}, str(tmp))
    with atomic_path(path / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    return path


def load_tokenizer(path: Path, expected: type[Tokenizer] | None = None) -> Tokenizer:
    """Rebuild a saved tokenizer.

    Args:
        path: the folder `save_tokenizer` wrote.
        expected: a policy class the stored one must be (or subclass); None: any.
    """
    from mole.tokenizer import TOKENIZERS  # the registry imports the policies, which import base

    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except FileNotFoundError:
        raise ConfigError("tokenizer", f"{path / CONFIG_FILE}: missing (not a saved tokenizer)") from None
    except json.JSONDecodeError as e:
        raise ConfigError("tokenizer", f"{path / CONFIG_FILE}: corrupt ({e})") from None
    if config.get("format") != FORMAT:
        raise ConfigError(
            "tokenizer", f"{path / CONFIG_FILE}: format {config.get('format')!r}, expected {FORMAT}"
        )
    policy = TOKENIZERS.get(config["tokenizer"], field="tokenizer")
    if expected is not None and not issubclass(policy, expected):
        raise ConfigError(
            "tokenizer", f"{path} holds a {config['tokenizer']!r} tokenizer, not {expected.name!r}"
        )
    tok = policy(**config["options"])
    tok.architecture, tok.arch_config = config["architecture"], config["arch_config"]
    if config["fitted"]:
        try:
            flat = load_file(str(path / STATS_FILE))
        except FileNotFoundError:
            raise ConfigError("tokenizer", f"{path / STATS_FILE}: missing") from None
        stats: dict[str, dict[str, torch.Tensor]] = {}
        for k, v in flat.items():
            key, _, stat = k.rpartition("/")  # keys are "<field>/<tensor>/<mean|std|count>"
            stats.setdefault(key, {})[stat] = v
        tok.stats = stats
    if tok.canonical == "match" and config["fitted"]:
        try:
            tok.reference = load_file(str(path / REFERENCE_FILE))
        except FileNotFoundError:
            raise ConfigError("tokenizer", f"{path / REFERENCE_FILE}: missing") from None
    return tok
