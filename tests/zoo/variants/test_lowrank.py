"""lowrank variant: Eckart-Young, tensorly reconstructions, rank limits, stored factors, zoo builds."""

import json
import math

import pytest
import torch

from mole.errors import ConfigError
from mole.nets import build_architecture
from mole.zoo import store
from mole.zoo.build import build_zoo
from mole.zoo.lowrank import (
    LayerPlan,
    balance,
    decompose,
    layer_ranks,
    plan_layers,
    rank_limit,
    reconstruct,
    svd_factors,
)
from mole.zoo.spec import ZooSpec
from mole.zoo.variants import build_variant
from tests.conftest import TINY_ZOO

FIELD = "variants.lowrank.rank"
# Relative Frobenius error at a conv's rank limit. Tucker and TT are exact there (SVDs, ~1e-7 in float32).
# CP is fitted by ALS; at full rank its components grow to ~100x the tensor's norm and cancel, so float32
# factors reconstruct to ~3e-6 .. 3e-5 (measured): a looser bound.
EXACT_TOL = {"cp": 1e-4, "tucker": 1e-5, "tt": 1e-5}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).double().norm(dim=1) / b.flatten(1).double().norm(dim=1)


def test_truncated_svd_error_is_the_discarded_spectrum():
    w = torch.randn(3, 20, 12, generator=torch.Generator().manual_seed(0))  # (K, out, in)
    for r in range(1, 13):
        u, v, s = svd_factors(w, r)
        assert u.shape == (3, 20, r) and v.shape == (3, r, 12)
        err = (w.double() - torch.bmm(u, v).double()).flatten(1).norm(dim=1)
        eckart_young = s[:, r:].pow(2).sum(1).sqrt()  # sqrt of the discarded squared singular values
        torch.testing.assert_close(err, eckart_young, rtol=1e-4, atol=1e-5 * w.norm().item())
        assert (torch.linalg.matrix_rank(torch.bmm(u, v)) <= r).all()


@pytest.mark.parametrize("kernel", [(3, 3), (5,)], ids=["2d", "1d"])
@pytest.mark.parametrize("kind", ["cp", "tucker", "tt"])
def test_conv_decompositions_improve_with_rank_and_are_exact_at_the_limit(kind, kernel):
    w = torch.randn(2, 6, 4, *kernel, generator=torch.Generator().manual_seed(1))  # (K, O, C, *kernel)
    shape = tuple(w.shape[1:])
    limit = rank_limit(kind, shape)
    errors = []
    for r in [1, 2, 3, 4, limit]:
        plan = LayerPlan("w", kind, layer_ranks(kind, shape, r), len(shape))
        assert len(decompose(w, plan)) == (len(shape) + (kind == "tucker"))  # one factor per mode (+ core)
        factors = decompose(w, plan)
        approx = reconstruct(balance(factors, torch.ones(2)), plan)
        assert (rel_err(approx, reconstruct(factors, plan)) < EXACT_TOL[kind]).all()  # rounding only
        errors.append(rel_err(approx, w))
    for lower, higher in zip(errors, errors[1:]):
        assert (higher < lower).all()
    assert (errors[-1] < EXACT_TOL[kind]).all()


def test_rank_limits_and_clamping_policy():
    mlp = build_architecture("mlp", (1, 8, 8), 10, hidden=[16])  # layers.0 16x64, layers.1 10x16
    plans = {p.name: p.ranks for p in plan_layers(mlp, 12, "none", FIELD)}
    assert plans == {"layers.0.weight": (12,), "layers.1.weight": (10,)}  # output layer clamped
    assert plan_layers(mlp, 16, "none", FIELD)[0].ranks == (16,)
    with pytest.raises(
        ConfigError, match=r"^variants.lowrank.rank: 17 exceeds the limit 16 of layers.0.weight \(16x64\)$"
    ):
        plan_layers(mlp, 17, "none", FIELD)
    cnn = build_architecture("cnn", (1, 8, 8), 10, channels=[4, 8], hidden=[16])  # convs.0 is 4x1x3x3
    assert [p.name for p in plan_layers(cnn, 2, "none", FIELD)] == ["fcs.0.weight", "fcs.1.weight"]
    assert plan_layers(cnn, 3, "tucker", FIELD)[0].ranks == (3, 1, 3, 3)
    assert plan_layers(cnn, 3, "tt", FIELD)[1].ranks == (1, 3, 3, 3, 1)  # convs.1: 8x4x3x3
    assert plan_layers(cnn, 9, "cp", FIELD)[0].ranks == (9,)
    for conv, limit in [("tucker", 4), ("tt", 4), ("cp", 9)]:
        with pytest.raises(ConfigError, match=rf"limit {limit} of convs.0.weight \(4x1x3x3, {conv}\)$"):
            plan_layers(cnn, limit + 1, conv, FIELD)
    signal = build_architecture("cnn", (1, 40), 10, channels=[4, 8], kernel_size=5, hidden=[16])
    assert plan_layers(signal, 3, "tucker", FIELD)[1].ranks == (3, 3, 5)  # convs.1: 8x4x5
    assert plan_layers(signal, 3, "tt", FIELD)[1].ranks == (1, 3, 3, 1)
    assert {p.ndim for p in plan_layers(signal, 3, "cp", FIELD)} == {3, 2}
    with pytest.raises(ConfigError, match=r"5 exceeds the limit 4 of convs.0.weight \(4x1x5, cp\)$"):
        plan_layers(signal, 5, "cp", FIELD)


@pytest.mark.parametrize(
    "options, field, text",
    [
        ({"rank": 0}, "rank", "must be a positive integer, got 0"),
        ({"rank": [4, -1]}, "rank", "must be a positive integer, got -1"),
        ({"rank": 2.5}, "rank", "got 2.5"),
        ({"rank": True}, "rank", "got True"),
        ({"rank": [4, 4]}, "rank", "distinct"),
        ({}, "rank", "missing"),
        ({"rank": 4, "method": "qr"}, "method", "unknown method 'qr'; valid: svd, factorized"),
        ({"rank": 4, "conv": "svd"}, "conv", "unknown conv 'svd'; valid: cp, tucker, tt, none"),
        ({"rank": 4, "ranks": 2}, "options", "unknown option(s) ['ranks']"),
    ],
)
def test_bad_options_raise_one_line_naming_the_field(options, field, text):
    with pytest.raises(ConfigError) as e:
        build_variant("lowrank", options)
    assert e.value.field == f"variants.lowrank.{field}" and text in str(e.value) and "\n" not in str(e.value)


def test_rank_above_a_layer_limit_fails_the_build_before_any_shard(tmp_path):
    spec = ZooSpec.from_dict(
        {**TINY_ZOO, "variants": ["dense", {"name": "lowrank", "options": {"rank": [4, 40]}}]}
    )
    with pytest.raises(ConfigError, match="rank: 40 exceeds the limit 16 of layers.0.weight"):
        build_zoo(spec, tmp_path / "z", progress=False)
    assert not (tmp_path / "z" / "shards").exists() or not any((tmp_path / "z" / "shards").iterdir())


# ---------------------------------------------------------------------------- through real zoos
MLP_SPEC = {
    **TINY_ZOO,
    "variants": [
        "dense",
        {"name": "quantized", "options": {"bits": [4, "ternary"], "mode": ["ptq", "qat"]}},
        {"name": "lowrank", "options": {"rank": [2, 16], "method": ["svd", "factorized"]}},
    ],
}
CNN_SPEC = {
    **TINY_ZOO,
    "architecture": "cnn",
    "arch_options": {"channels": [4, 8], "hidden": [16]},
    "members": 4,
    "variants": [
        "dense",
        {"name": "quantized", "options": {"bits": 4}},
        {
            "name": "lowrank",
            "options": {"rank": 3, "method": ["svd", "factorized"], "conv": ["tucker", "cp"]},
        },
    ],
}


def rebuild_from_factors(row: dict) -> dict[str, torch.Tensor]:
    """Each factorized weight of a row, rebuilt from its stored `factors` and `factor_shapes` alone."""
    extra, config = json.loads(row["extra"]), json.loads(row["variant_config"])
    flat, i, factors = torch.tensor(row["factors"]), 0, {}
    for name, dims in extra["factor_shapes"]:
        factors[name] = flat[i : i + math.prod(dims)].reshape(1, *dims)  # K = 1
        i += math.prod(dims)
    assert i == len(flat)
    out = {}
    for name, ranks in extra["layer_ranks"].items():
        kind = "linear" if f"{name}.U" in factors else config["conv"]
        ndim = sum(f.startswith(f"{name}.") and not f.endswith(".core") for f in factors)  # one per mode
        out[name] = reconstruct(factors, LayerPlan(name, kind, tuple(ranks), ndim))[0]
    return out


@pytest.mark.parametrize("spec", [MLP_SPEC, CNN_SPEC], ids=["mlp", "cnn"])
def test_zoo_with_every_compressed_variant(spec, tmp_path):
    out = tmp_path / "zoo"
    build_zoo(ZooSpec.from_dict(spec), out, progress=False)
    rows = store.read_zoo(out).to_pylist()
    arch = build_architecture(spec["architecture"], (1, 8, 8), 10, **spec["arch_options"])
    dense = {r["member_index"]: r for r in rows if r["variant"] == "dense" and r["final"]}
    by_variant = {v: [r for r in rows if r["variant"] == v] for v in ("quantized", "lowrank")}
    assert all(by_variant.values()) and len(dense) == spec["members"]
    assert all(
        r["bits"] is not None and r["codes"] is not None and r["scales"] is not None
        for r in by_variant["quantized"]
    )
    for row in by_variant["lowrank"]:
        config = json.loads(row["variant_config"])
        assert row["rank"] == config["rank"] and row["bits"] is None and row["codes"] is None
        assert json.loads(row["extra"])["finite"]
        params = arch.unflatten(torch.tensor(row["params"]))
        for name, weight in rebuild_from_factors(row).items():
            torch.testing.assert_close(weight, params[name], rtol=1e-5, atol=1e-6)
            if weight.dim() == 2:
                assert torch.linalg.matrix_rank(weight) <= config["rank"]
        if config["method"] == "svd" and config["rank"] == 16:  # every layer at its limit: exact
            exact = torch.tensor(dense[row["member_index"]]["params"])
            torch.testing.assert_close(torch.tensor(row["params"]), exact, rtol=1e-4, atol=1e-5)
    again = tmp_path / "again"
    build_zoo(ZooSpec.from_dict(spec), again, progress=False)
    for path in sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")):
        assert (again / path.relative_to(out)).read_bytes() == path.read_bytes()
