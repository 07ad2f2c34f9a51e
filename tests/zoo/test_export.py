import json

import pytest
import torch

from mole.errors import StoreError
from mole.zoo import store
from mole.zoo.build import build_zoo
from mole.zoo.export import export_member, load_exported, module_from_row
from mole.zoo.spec import ZooSpec
from tests.conftest import TINY_ZOO


@pytest.fixture(scope="module")
def cnn_zoo(tmp_path_factory):
    spec = ZooSpec.from_dict(
        {
            **TINY_ZOO,
            "name": "tinycnn",
            "architecture": "cnn",
            "members": 3,
            "arch_options": {"channels": [4, 8], "hidden": [16]},
        }
    )
    out = tmp_path_factory.mktemp("z") / "cnn"
    build_zoo(spec, out, progress=False)
    return out


def test_export_round_trip(cnn_zoo, tmp_path, digits):
    rows = [r for r in store.read_zoo(cnn_zoo).to_pylist() if r["member_index"] == 1]
    final = max(rows, key=lambda r: r["step"])
    folder = export_member(cnn_zoo, final["member_id"], tmp_path / "m")
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["member_id"] == final["member_id"] and meta["test_acc"] == final["test_acc"]
    assert meta["arch_options"]["channels"] == [4, 8] and meta["step"] == final["step"]
    module = load_exported(folder)
    with torch.no_grad():
        torch.testing.assert_close(module(digits.x_test), module_from_row(final)(digits.x_test))
        acc = (module(digits.x_test).argmax(1) == digits.y_test).double().mean().item()
    assert acc == pytest.approx(final["test_acc"], abs=1e-12)


def test_export_earlier_snapshot_and_errors(cnn_zoo, tmp_path):
    member = store.read_zoo(cnn_zoo)["member_id"][0].as_py()
    folder = export_member(cnn_zoo, member, tmp_path / "init", step=0)
    assert json.loads((folder / "meta.json").read_text())["step"] == 0
    with pytest.raises(StoreError, match="no snapshot at step 7"):
        export_member(cnn_zoo, member, tmp_path / "x", step=7)
    with pytest.raises(StoreError, match="no member 'nobody'"):
        export_member(cnn_zoo, "nobody", tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
