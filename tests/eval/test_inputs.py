"""Reading zoo folders into report roles: which section a zoo's rows call for, one-line errors, theory rows."""

from __future__ import annotations

import json

import pytest
import torch

from mole.errors import ConfigError
from mole.eval.inputs import (
    check_architectures,
    check_same_task,
    load_theory,
    read_folder,
    role_of,
    unique_names,
)
from mole.theory.io import write_csv
from tests.eval.helpers import member, row


def supermask(seed: int, trained: bool = False) -> dict:
    """A row of a mask over a frozen init (params = init where kept), or with trained params (IMP-like)."""
    m = member(seed)
    g = torch.Generator().manual_seed(seed)
    mask = {n: torch.rand(t.shape, generator=g) > 0.5 for n, t in m.params.items()}
    init = {n: torch.randn(t.shape, generator=g) for n, t in m.params.items()}
    params = m.params if trained else {n: init[n] * mask[n] for n in init}
    return row(m.replace(params=params, mask=mask, init_params=init), {"sparsity": 0.5})


def test_roles_follow_the_rows():
    dense = [row(member(i), {"test_acc": 0.5 + i / 10}) for i in range(2)]
    assert role_of(dense) == "dense"
    assert role_of([supermask(0), supermask(1)]) == "masks"
    # IMP rows store init_params and a mask too, but their params were trained: not masks over inits
    imp = [supermask(0, trained=True)]
    assert role_of(imp) == "sparse"  # prompted with sparsity 0.5
    projected = [row(member(0), {"test_acc": 0.9}, extra={"project": {"sparsity": 0.8}})]
    assert role_of(projected) == "sparse"
    assert role_of([row(member(0), {"variant": "dense"})]) == "other"  # no test_acc prompt
    assert role_of([row(member(0), {"sparsity": 0.0, "test_acc": 0.5})]) == "dense"  # 0: dense


def test_a_folder_that_is_no_zoo_is_a_one_line_error(tmp_path):
    (tmp_path / "notes").mkdir()
    with pytest.raises(ConfigError) as e:
        read_folder(tmp_path / "notes", "generated")
    assert e.value.field == "generated" and str(tmp_path / "notes") in str(e.value)
    assert "is not a zoo folder" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "notes" / "manifest.json").write_text("{not json")
    with pytest.raises(ConfigError, match="^baselines: .* is not a zoo folder .*corrupt manifest"):
        read_folder(tmp_path / "notes", "baselines")


def test_task_and_architecture_checks_name_the_folder(tmp_path):
    rows = [
        {"task": "digits", "task_options": "{}", "architecture": "mlp", "arch_options": '{"hidden": [4]}'}
    ]
    check_same_task(rows, tmp_path, ("digits", {}), "reference")
    with pytest.raises(
        ConfigError, match=f"^reference: {tmp_path} is task digits .*the generated zoos mnist1d"
    ):
        check_same_task(rows, tmp_path, ("mnist1d", {}), "reference")
    with pytest.raises(ConfigError, match="^reference: .* is task digits"):
        check_same_task(rows, tmp_path, ("digits", {"seed": 1}), "reference")
    check_architectures(rows, tmp_path, {'mlp {"hidden": [4]}', 'mlp {"hidden": [8]}'}, "reference")
    with pytest.raises(ConfigError, match=f'^reference: {tmp_path} has architecture .*hidden": \\[4\\]'):
        check_architectures(rows, tmp_path, {'mlp {"hidden": [8]}'}, "reference")


def test_unique_names(tmp_path):
    folders = [tmp_path / "a" / "gen", tmp_path / "b" / "gen", tmp_path / "sparse"]
    assert unique_names(folders) == ["a/gen", "b/gen", "sparse"]


def test_theory_from_quickstart_rows_or_theory_csvs(tmp_path):
    rss = [{"dist": "continuous", "bits": None, "n": 4, "eps": 0.1, "p_success": 1.0}]
    run = tmp_path / "run"
    (run / "theory").mkdir(parents=True)
    (run / "subset_sum").mkdir()
    (run / "theory" / "rows.json").write_text(
        json.dumps({"rss": rss, "npp": [], "subset_sum": [], "settings": {}})
    )
    (run / "theory" / "rss.png").write_bytes(b"png")
    (run / "subset_sum" / "subset_sum.png").write_bytes(b"png")
    theory = load_theory(run / "theory")
    assert theory.rows == {"rss": rss, "npp": [], "subset_sum": []}
    assert theory.images == {
        "rss": run / "theory" / "rss.png",
        "subset_sum": run / "subset_sum" / "subset_sum.png",
    }

    folder = tmp_path / "csvs"
    folder.mkdir()
    write_csv(rss, folder / "rss.csv")
    write_csv([{"n": 4, "hidden": "8-4", "weight_err_max": 0.125}], folder / "subset_sum.csv")
    theory = load_theory(folder)
    assert theory.rows["rss"] == rss and theory.rows["npp"] == [] and theory.images == {}
    assert theory.rows["subset_sum"] == [{"n": 4, "hidden": "8-4", "weight_err_max": 0.125}]
    with pytest.raises(ConfigError, match="^theory: .* holds no rows.json, rss.csv"):
        load_theory(tmp_path / "run" / "subset_sum")
