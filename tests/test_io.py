"""Atomic files and folders: the new version or the old, never half of one, no temporary left behind."""

from __future__ import annotations

import pytest

from mole.errors import StoreError
from mole.io import atomic_dir, atomic_path, read_json, write_json
from mole.zoo import store


def test_atomic_file_replaces_on_success_only(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    with atomic_path(path) as tmp:
        assert tmp.parent == path.parent and not path.exists()
        tmp.write_text("one")
    assert path.read_text() == "one"
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "one" and [p.name for p in path.parent.iterdir()] == ["a.txt"]


def test_atomic_folder_replaces_whole_on_success_only(tmp_path):
    path = tmp_path / "model"
    with atomic_dir(path) as tmp:
        (tmp / "x").write_text("1")
    with atomic_dir(path) as tmp:
        (tmp / "y").write_text("2")
    assert [p.name for p in path.iterdir()] == ["y"]  # the old folder's files are gone with it
    with pytest.raises(RuntimeError), atomic_dir(path) as tmp:
        (tmp / "z").write_text("half")
        raise RuntimeError("killed")
    assert [p.name for p in path.iterdir()] == ["y"] and [p.name for p in tmp_path.iterdir()] == ["model"]


def test_json_round_trip_and_one_line_errors(tmp_path):
    write_json(tmp_path / "a.json", {"b": 1, "a": [1.5, None]})
    assert (tmp_path / "a.json").read_text() == '{\n "a": [\n  1.5,\n  null\n ],\n "b": 1\n}\n'
    assert read_json(tmp_path / "a.json", "thing") == {"a": [1.5, None], "b": 1}
    with pytest.raises(StoreError, match=r"b.json: missing \(thing\)$"):
        read_json(tmp_path / "b.json", "thing")
    (tmp_path / "c.json").write_text("{")
    with pytest.raises(StoreError, match=r"c.json: corrupt thing \(JSONDecodeError"):
        read_json(tmp_path / "c.json", "thing")
    assert store.write_json is write_json and store.atomic_path is atomic_path  # the store's are these
