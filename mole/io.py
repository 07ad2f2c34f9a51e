"""Atomic writes: every file and folder mole writes goes to a temporary name beside it and is renamed
into place, so a killed process leaves the old version or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from mole.errors import StoreError

TEMP_SUFFIX = ".tmp"  # atomic_path's and atomic_dir's temporary names: .NAME.XXXXXXXX.tmp
OLD_SUFFIX = ".old"  # atomic_dir's old folder, moved aside: .NAME.old


def is_temporary(path: Path) -> bool:
    """Whether `path` is named as atomic_path / atomic_dir name their temporary files and folders:
    what a killed write leaves behind, never a finished file."""
    name = Path(path).name
    return name.startswith(".") and name.endswith((TEMP_SUFFIX, OLD_SUFFIX))


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary file path beside `path`; on success fsync it and rename it over `path`.

    Args:
        path: the file to write (its folder is created).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success put it in place of `path`, replacing a
    folder there whole.

    A folder cannot replace another in one rename, so the old one is first moved aside to
    `.NAME.old` and deleted after the swap; a kill between the two renames leaves `path` missing
    (and the old folder beside it), never a mix of old and new files.

    Args:
        path: the folder to write (its parent is created).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent))
    try:
        yield tmp
        old = path.with_name(f".{path.name}{OLD_SUFFIX}")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as indented, key-sorted JSON, atomically."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def read_json(path: Path, what: str) -> Any:
    """The JSON in `path`; a missing or corrupt file is a one-line StoreError naming `what` it holds."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{path}: missing ({what})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{path}: corrupt {what} ({e.__class__.__name__}: {e})") from None


def read_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors in `path`; a missing, truncated or corrupt file is a one-line StoreError naming it."""
    path = Path(path)
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise StoreError(f"{path}: missing ({what})") from None
    except SafetensorError as e:
        raise StoreError(f"{path}: corrupt {what} ({e})") from None


def check_files(folder: Path, what: str) -> None:
    """Check that every JSON file parses and every safetensors header covers its file in `folder`
    (not its subfolders): a damaged file is a one-line StoreError naming it, before a library that
    would raise a multi-line error reads it. Headers only: the tensors are not read."""
    for path in sorted(Path(folder).glob("*.json")):
        read_json(path, what)
    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(path), "pt"):
                pass
        except SafetensorError as e:
            raise StoreError(f"{path}: corrupt {what} ({e})") from None
