"""neuron_pruned: duplicates merge away exactly, rows describe the narrower net, bad options fail loudly."""

import json
from pathlib import Path

import pytest
import torch

from mole.errors import ConfigError
from mole.nets import build_architecture
from mole.zoo import store
from mole.zoo.build import build_zoo
from mole.zoo.export import module_from_row
from mole.zoo.spec import ZooSpec
from mole.zoo.variants import build_variant
from mole.zoo.variants.neuron_pruned import reduce_width
from tests.conftest import TINY_ZOO


def duplicated(arch, params, prefix: str, seed: int = 0):
    """The same function with every neuron of hidden layer 0 doubled (outgoing weights split unevenly)."""
    g = torch.Generator().manual_seed(seed)
    w, b, w2 = params[f"{prefix}.0.weight"], params[f"{prefix}.0.bias"], params[f"{prefix}.1.weight"]
    h = w.shape[1]
    perm = torch.randperm(2 * h, generator=g)  # twins end up far apart
    split = torch.rand(w2.shape[0], 1, h, generator=g)  # (K, 1, h) share kept by the first copy
    big_arch = build_architecture(
        arch.name,
        arch.input_shape,
        arch.num_classes,
        **{**arch.options(), "hidden": [2 * h, *arch.hidden[1:]]},
    )
    big = dict(params)
    big[f"{prefix}.0.weight"] = torch.cat([w, w], 1)[:, perm]  # (K, 2h, in)
    big[f"{prefix}.0.bias"] = torch.cat([b, b], 1)[:, perm]
    big[f"{prefix}.1.weight"] = torch.cat([w2 * split, w2 * (1 - split)], 2)[:, :, perm]  # (K, out, 2h)
    return big_arch, big


@pytest.mark.parametrize(
    "name, options, prefix",
    [("mlp", {"hidden": [12, 8]}, "layers"), ("cnn", {"channels": [4], "hidden": [12]}, "fcs")],
)
def test_merging_exact_duplicates_keeps_the_function(name, options, prefix, digits):
    arch = build_architecture(name, digits.input_shape, 10, **options)
    params = arch.init_stacked([1, 2, 3])
    for p in arch.param_shapes():  # keep every hidden neuron alive on some input: no dead-neuron ties
        if p == f"{prefix}.0.bias":
            params[p] = params[p] + 0.5
    big_arch, big = duplicated(arch, params, prefix)
    sample = torch.cat([digits.x_train, digits.x_test])
    small, reduced = reduce_width(big_arch, big, sample, list(arch.hidden), "merge")
    assert small.hidden == arch.hidden and small.num_params == arch.num_params
    before = big_arch.forward_stacked(big, digits.x_test)
    assert (before - arch.forward_stacked(params, digits.x_test)).abs().max() < 1e-4  # the doubling is exact
    change = (before - small.forward_stacked(reduced, digits.x_test)).abs().max().item()
    assert change < 1e-4


def test_widths_shrink_as_requested_and_merge_beats_remove(digits):
    arch = build_architecture("mlp", digits.input_shape, 10, hidden=[16, 12])
    params = arch.init_stacked([4, 5])
    big_arch, big = duplicated(arch, params, "layers", seed=1)  # hidden [32, 12]: half the first is redundant
    changes = {}
    for method in ("merge", "remove"):
        small, reduced = reduce_width(big_arch, big, digits.x_train, [16, 9], method)
        assert small.hidden == [16, 9]
        assert {n: tuple(t.shape[1:]) for n, t in reduced.items()} == small.param_shapes()
        out = small.forward_stacked(reduced, digits.x_test)
        changes[method] = (out - big_arch.forward_stacked(big, digits.x_test)).abs().max().item()
    assert changes["merge"] < changes["remove"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    spec = ZooSpec.from_dict(
        {
            **TINY_ZOO,
            "arch_options": {"hidden": [16, 8]},
            "variants": [
                "dense",
                {
                    "name": "neuron_pruned",
                    "options": {"width_fraction": [0.75, 0.5], "method": ["merge", "remove"]},
                },
            ],
        }
    )
    out = tmp_path_factory.mktemp("zoo") / "np"
    build_zoo(spec, out, progress=False)
    return out


def test_rows_describe_the_narrower_net_and_report_the_change(zoo, digits):
    rows = store.read_zoo(zoo).to_pylist()
    dense = {r["member_index"]: r for r in rows if r["variant"] == "dense" and r["final"]}
    pruned = [r for r in rows if r["variant"] == "neuron_pruned"]
    assert len(pruned) == len(dense) * 4 and len({r["member_id"] for r in pruned}) == len(pruned)
    for r in pruned:
        cfg, extra = json.loads(r["variant_config"]), json.loads(r["extra"])
        hidden = [round(cfg["width_fraction"] * h) for h in (16, 8)]
        assert json.loads(r["arch_options"])["hidden"] == hidden == extra["hidden_after"]
        assert extra["neurons_before"] == 24 and extra["neurons_after"] == sum(hidden)
        assert len(r["params"]) == r["num_params"] == hidden[0] * (64 + 1 + hidden[1]) + hidden[1] * 11 + 10
        assert extra["dense_test_acc"] == dense[r["member_index"]]["test_acc"]
        assert r["step"] == dense[r["member_index"]]["step"] and r["final"]
        # function_change is the max |logit difference| to the dense member on the test split
        big, small = module_from_row(dense[r["member_index"]]), module_from_row(r)
        with torch.no_grad():
            change = (big(digits.x_test) - small(digits.x_test)).abs().max().item()
            acc = (small(digits.x_test).argmax(1) == digits.y_test).double().mean().item()
        assert extra["function_change"] == pytest.approx(change, rel=1e-4, abs=1e-5)
        assert acc == pytest.approx(r["test_acc"], abs=1e-12)


def test_width_option_caps_every_hidden_layer():
    v = build_variant("neuron_pruned", {"width": [10, 4], "method": "remove"})
    assert [v.target_widths([16, 8], c) for c in v.configs()] == [[10, 8], [4, 4]]
    assert len({v.tag(c) for c in v.configs()}) == 2


@pytest.mark.parametrize(
    "options, field, problem",
    [
        ({"width_fraction": 0}, "variants.neuron_pruned.width_fraction", "must be in (0, 1], got 0"),
        ({"width_fraction": [0.5, 1.5]}, "variants.neuron_pruned.width_fraction", "in (0, 1]"),
        ({"width": 0}, "variants.neuron_pruned.width", "integer >= 1"),
        ({"width": 4, "width_fraction": 0.5}, "variants.neuron_pruned.width", "not both"),
        ({"method": "prune"}, "variants.neuron_pruned.method", "one of merge, remove"),
        ({"samples": 1}, "variants.neuron_pruned.samples", "integer >= 2"),
        ({"fraction": 0.5}, "variants.neuron_pruned.fraction", "unknown option; valid: width_fraction"),
    ],
)
def test_bad_options_raise_one_line_naming_the_field(options, field, problem):
    with pytest.raises(ConfigError) as e:
        build_variant("neuron_pruned", options)
    assert e.value.field == field and problem in str(e.value) and "\n" not in str(e.value)


def test_net_without_hidden_layers_is_refused_before_anything_is_written(tmp_path):
    spec = ZooSpec.from_dict(
        {
            **TINY_ZOO,
            "architecture": "cnn",
            "arch_options": {"channels": [4], "hidden": []},
            "variants": ["dense", {"name": "neuron_pruned"}],
        }
    )
    with pytest.raises(ConfigError, match="variants.neuron_pruned: this cnn has no hidden"):
        build_zoo(spec, tmp_path / "z", progress=False)
    assert not (tmp_path / "z").exists()
