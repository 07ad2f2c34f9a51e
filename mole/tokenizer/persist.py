"""The on-disk format of a saved tokenizer: `tokenizer.json` (TOKENIZERS name, options, architecture)
plus `stats.safetensors` (the fitted statistics) and, for canonical="match", `reference.safetensors`
(the params members are matched to), each written to a temporary name and renamed.

Plain data in and out: mole.tokenizer.base turns a Tokenizer into these and back, so this module knows
no policy and the dependency points one way (base -> persist).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from mole.errors import ConfigError, StoreError
from mole.io import atomic_path, read_safetensors

CONFIG_FILE = "tokenizer.json"
STATS_FILE = "stats.safetensors"
REFERENCE_FILE = "reference.safetensors"
FORMAT = 1


def write_tokenizer(
    path: Path,
    config: dict,
    stats: dict[str, dict[str, torch.Tensor]] | None,
    reference: dict[str, torch.Tensor] | None,
) -> Path:
    """Write a tokenizer into folder `path` (created); the tensors first, the config that names them last.

    Args:
        path: the folder.
        config: name, options, architecture and whether it is fitted (FORMAT is added here).
        stats: field/tensor -> statistic name -> tensor, or None (not fitted).
        reference: the matching reference params, or None.
    """
    path.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT, **config}
    if stats is not None:
        flat = {f"{k}/{s}": v.contiguous() for k, d in stats.items() for s, v in d.items()}
        with atomic_path(path / STATS_FILE) as tmp:
            save_file(flat, str(tmp))
    if reference is not None:
        with atomic_path(path / REFERENCE_FILE) as tmp:
            save_file({k: v.contiguous() for k, v in reference.items()}, str(tmp))
    with atomic_path(path / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    return path


def read_config(path: Path) -> dict:
    """The config `write_tokenizer` wrote into folder `path`; missing, corrupt or other-format files raise."""
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except FileNotFoundError:
        raise ConfigError("tokenizer", f"{path / CONFIG_FILE}: missing (not a saved tokenizer)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{path / CONFIG_FILE}: corrupt tokenizer config ({e})") from None
    if config.get("format") != FORMAT:
        raise ConfigError(
            "tokenizer", f"{path / CONFIG_FILE}: format {config.get('format')!r}, expected {FORMAT}"
        )
    return config


def read_stats(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The fitted statistics saved in folder `path`, as field/tensor -> statistic name -> tensor."""
    if not (path / STATS_FILE).is_file():
        raise ConfigError("tokenizer", f"{path / STATS_FILE}: missing")
    flat = read_safetensors(path / STATS_FILE, "tokenizer statistics")
    stats: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in flat.items():
        key, _, stat = k.rpartition("/")  # keys are "<field>/<tensor>/<mean|std|count>"
        stats.setdefault(key, {})[stat] = v
    return stats


def read_reference(path: Path) -> dict[str, torch.Tensor]:
    """The matching reference params saved in folder `path`."""
    if not (path / REFERENCE_FILE).is_file():
        raise ConfigError("tokenizer", f"{path / REFERENCE_FILE}: missing")
    return read_safetensors(path / REFERENCE_FILE, "tokenizer reference")
