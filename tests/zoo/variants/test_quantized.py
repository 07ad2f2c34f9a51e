"""quantized variant: values on the grid, codes in range, exact reload, error vs bits, QAT vs PTQ, bad input."""

import json
import math

import numpy as np
import pytest
import torch

from mole.errors import ConfigError
from mole.nets import build_architecture
from mole.zoo import store
from mole.zoo.build import build_zoo, prepare
from mole.zoo.export import arch_from_row, module_from_row
from mole.zoo.quant import (
    CLIPS,
    SCALES,
    TERNARY,
    codes_onto_grid,
    dequantize_params,
    fake_quantize,
    level_bits,
    qmax,
    quantize_params,
    quantize_weight,
    weight_error,
)
from mole.zoo.spec import ZooSpec, plan_groups
from mole.zoo.variants import build_variant
from mole.zoo.variants.base import GroupContext
from mole.zoo.variants.quantized import Quantized
from tests.conftest import TINY_ZOO

LEVELS = [8, 4, 2, TERNARY]
QUANT = {"name": "quantized", "options": {"bits": [8, 2, "ternary"], "mode": ["ptq", "qat"]}}


def group_ctx(members=8, epochs=10, **spec) -> GroupContext:
    """A digits MLP group of `members`, trained for `epochs` when its dense run is asked for."""
    raw = {
        **TINY_ZOO,
        "arch_options": {"hidden": [32]},
        "members": members,
        "group_size": members,
        "hparams": {**TINY_ZOO["hparams"], "lr": {"low": 0.02, "high": 0.1, "log": True}, "epochs": [epochs]},
        **spec,
    }
    zoo = ZooSpec.from_dict(raw)
    data, arch, _ = prepare(zoo)
    return GroupContext(zoo, zoo.spec_hash(), arch, data, plan_groups(zoo)[0])


@pytest.fixture(scope="module")
def trained() -> GroupContext:
    ctx = group_ctx()
    ctx.dense()
    return ctx


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("arch_name", ["mlp", "cnn"])
def test_weights_lie_exactly_on_the_grid(level, arch_name):
    arch = build_architecture(arch_name, (1, 8, 8), 10)
    params = arch.init_stacked([1, 2, 3], [0.5, 1.0, 2.0])
    q = quantize_params(arch, params, level)
    shapes = arch.param_shapes()
    assert q.codes.dtype == torch.int8 and q.scales.dtype == torch.float32
    assert q.codes.shape == (3, sum(math.prod(shapes[n]) for n in arch.weight_names()))
    assert q.scales.shape == (3, sum(shapes[n][0] for n in arch.weight_names()))
    assert (q.scales > 0).all()
    bound = 1 if level == TERNARY else qmax(level_bits(level))
    assert q.codes.abs().max() <= bound
    if level == TERNARY:
        assert set(q.codes.unique().tolist()) <= {-1, 0, 1}
    else:  # the largest weight of each channel lands on the end of the grid
        assert q.codes.abs().max() == bound
    rebuilt = dequantize_params(arch, q.codes, q.scales, q.params)
    for name in arch.param_shapes():
        assert torch.equal(rebuilt[name], q.params[name])  # weight == code * scale, bitwise
        if name not in arch.weight_names():
            assert torch.equal(q.params[name], params[name])  # biases stay float


@pytest.mark.parametrize("level,q", [(8, 127), (4, 7), (2, 1), (TERNARY, 1)])
def test_generated_codes_are_snapped_onto_the_grid(level, q):
    arch = build_architecture("mlp", (1, 8, 8), 10, hidden=[8])
    params = arch.init_stacked([0, 1])  # (2, ...)
    names = arch.weight_names()
    codes = {n: 300 * torch.randn(params[n].shape, generator=torch.Generator().manual_seed(1)) for n in names}
    scales = {n: torch.randn(params[n].shape[:2], generator=torch.Generator().manual_seed(2)) for n in names}
    scales[names[0]][0, 0] = 0.0  # a zero scale becomes 1, as a zero channel's
    keep = {n: torch.rand(params[n].shape, generator=torch.Generator().manual_seed(3)) > 0.5 for n in names}
    out = codes_onto_grid(arch, params, codes, scales, level, keep)
    flat = torch.cat([codes[n].flatten(1) for n in names], 1)
    want = torch.clamp(torch.round(flat), -q, q) * torch.cat([keep[n].flatten(1) for n in names], 1)
    assert torch.equal(out.codes, want.to(torch.int8)) and out.codes.abs().max() == q
    assert (out.scales > 0).all() and out.scales[0, 0] == 1.0
    assert torch.equal(out.scales[:, 1:], torch.cat([scales[n] for n in names], 1).abs()[:, 1:])
    back = dequantize_params(arch, out.codes, out.scales, params)  # code * scale == params, bitwise
    assert all(torch.equal(back[n], out.params[n]) for n in params)
    assert all(torch.equal(out.params[n], params[n]) for n in params if n not in names)  # biases kept


def test_fake_quantize_passes_gradients_straight_through():
    arch = build_architecture("mlp", (1, 8, 8), 10, hidden=[8])
    params = {k: v.requires_grad_(True) for k, v in arch.init_stacked([0, 1]).items()}
    fq = fake_quantize(params, arch.weight_names(), 4)
    assert torch.equal(fq["layers.0.weight"], quantize_params(arch, params, 4).params["layers.0.weight"])
    upstream = torch.randn_like(params["layers.0.weight"])
    (grad,) = torch.autograd.grad((fq["layers.0.weight"] * upstream).sum(), params["layers.0.weight"])
    assert torch.equal(grad, upstream)


def test_error_shrinks_with_bits(trained):
    final = trained.dense().final
    err = {
        b: weight_error(trained.arch, final.params, quantize_params(trained.arch, final.params, b).params)
        for b in (8, 4, 2)
    }
    assert (err[8] < err[4]).all() and (err[4] < err[2]).all()
    assert (err[8] < 0.01).all()
    ptq8 = Quantized(bits=8).run(trained, {"bits": 8, "mode": "ptq", "scheme": "symmetric"})
    float_acc = final.metrics["test_acc"]
    assert all(abs(r["test_acc"] - float_acc[k].item()) < 0.02 for k, r in enumerate(ptq8))


def test_qat_beats_ptq_at_two_bits(trained):
    """With max|w| scales, measured over seeds 3, 4, 5 (8 members, 10 epochs): PTQ 2-bit ~0.63 mean
    test accuracy, QAT ~0.87, and QAT ahead on every member by at least 0.05."""
    variant = Quantized(bits=2, mode=["ptq", "qat"], scale="absmax")
    ptq, qat = ([r["test_acc"] for r in variant.run(trained, c)] for c in variant.configs())
    assert np.mean(qat) > np.mean(ptq) + 0.1
    assert all(q > p for q, p in zip(qat, ptq))  # every member, not just the mean


def test_mse_scale_rounds_closer_and_lifts_two_bit_ptq(trained):
    """The clip of least rounding error: a smaller weight error than max|w| on every member, by
    construction (max|w| is one of the clips), and a better 2-bit PTQ member on average."""
    rows = {
        scale: Quantized(bits=2, mode="ptq", scale=scale).run(
            trained, {"bits": 2, "mode": "ptq", "scheme": "symmetric"}
        )
        for scale in SCALES
    }
    err = {s: [json.loads(r["extra"])["weight_rel_error"] for r in rows[s]] for s in SCALES}
    assert all(m < a for m, a in zip(err["mse"], err["absmax"]))
    acc = {s: np.mean([r["test_acc"] for r in rows[s]]) for s in SCALES}
    assert acc["mse"] > acc["absmax"] + 0.05, acc
    assert {json.loads(r["extra"])["scale"] for r in rows["mse"]} == {"mse"}


def test_mse_scale_matches_an_exhaustive_search():
    """Each channel's scale is the candidate clip of least squared rounding error (found here by
    scoring all 41 at once); a zero channel gets scale 1 and codes 0."""
    w = torch.randn(3, 5, 12, generator=torch.Generator().manual_seed(0))
    w[1, 2] = 0.0
    for level in (8, 4, 2):
        codes, scales = quantize_weight(w, level)
        q = qmax(level)
        amax = w.abs().amax(-1)
        cand = CLIPS[:, None, None] * amax / q  # (41, K, out)
        rounded = torch.clamp(torch.round(w / cand[..., None].clamp(min=1e-12)), -q, q) * cand[..., None]
        err = ((rounded - w) ** 2).sum(-1)  # (41, K, out)
        chosen = ((codes.float() * scales[..., None] - w) ** 2).sum(-1)
        assert torch.allclose(chosen, err.amin(0), atol=1e-7, rtol=1e-5)
        assert scales[1, 2] == 1.0 and not codes[1, 2].any()
        _, absmax = quantize_weight(w, level, "absmax")
        assert torch.equal(absmax[0], w[0].abs().amax(-1) / q)
    with pytest.raises(ConfigError, match="scale: unknown 'max'; valid: mse, absmax"):
        quantize_weight(w, 2, "max")


@pytest.mark.parametrize(
    "options, field, text",
    [
        ({"bits": 3}, "variants.quantized.bits", "unsupported bit-width 3; valid: 8, 4, 2, ternary"),
        ({"bits": [8, 16]}, "variants.quantized.bits", "unsupported bit-width 16; valid: 8, 4, 2, ternary"),
        ({"bits": True}, "variants.quantized.bits", "unsupported bit-width True"),
        ({"bits": [4, 4]}, "variants.quantized.bits", "distinct"),
        ({"mode": "fp8"}, "variants.quantized.mode", "unknown mode 'fp8'; valid: ptq, qat"),
        ({"bit": 8}, "variants.quantized.options", "unknown option(s) ['bit']"),
        ({"scale": "minmax"}, "variants.quantized.scale", "unknown 'minmax'; valid: mse, absmax"),
    ],
)
def test_bad_options_raise_one_line_naming_the_field(options, field, text):
    with pytest.raises(ConfigError) as e:
        build_variant("quantized", options)
    assert e.value.field == field and text in str(e.value) and "\n" not in str(e.value)


def test_configs_and_tags_are_unique_and_filesystem_safe():
    v = Quantized(bits=[8, 4, 2, "ternary"], mode=["ptq", "qat"])
    tags = [v.tag(c) for c in v.configs()]
    assert len(set(tags)) == len(tags) == 8
    assert all(t.replace("-", "").isalnum() for t in tags)
    assert {"bits": 2, "mode": "qat", "scheme": "ternary"} in v.configs()


# ---------------------------------------------------------------------------- through a real zoo
@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "q"
    build_zoo(ZooSpec.from_dict({**TINY_ZOO, "variants": ["dense", QUANT]}), out, progress=False)
    return out


def test_rows_reload_on_the_grid_and_reproduce_accuracy(zoo, digits):
    rows = [r for r in store.read_zoo(zoo).to_pylist() if r["variant"] == "quantized"]
    assert len(rows) == TINY_ZOO["members"] * 6
    for row in rows:
        config = json.loads(row["variant_config"])
        assert row["bits"] == config["bits"] and row["final"] and row["factors"] is None
        assert json.loads(row["extra"])["finite"]
        arch = arch_from_row(row)
        codes = np.asarray(row["codes"], dtype=np.int8)
        scales = np.asarray(row["scales"], dtype=np.float32)
        bound = 1 if config["scheme"] == TERNARY else qmax(config["bits"])
        assert np.abs(codes).max() <= bound
        params = arch.unflatten(torch.as_tensor(np.asarray(row["params"], dtype=np.float32)))
        ci = si = 0
        for name in arch.weight_names():  # the column contract, re-derived in numpy
            w = params[name].numpy()
            c = codes[ci : ci + w.size].reshape(w.shape)
            s = scales[si : si + w.shape[0]].reshape(-1, *[1] * (w.ndim - 1))
            assert np.array_equal(c.astype(np.float32) * s, w)
            ci, si = ci + w.size, si + w.shape[0]
        assert (ci, si) == (len(codes), len(scales))
        with torch.no_grad():
            acc = (module_from_row(row)(digits.x_test).argmax(1) == digits.y_test).double().mean().item()
        assert acc == row["test_acc"]


def test_build_twice_gives_identical_bytes(zoo, tmp_path):
    again = tmp_path / "again"
    build_zoo(ZooSpec.from_dict({**TINY_ZOO, "variants": ["dense", QUANT]}), again, progress=False)
    for path in sorted(p for p in zoo.rglob("*") if p.is_file() and not p.name.startswith(".")):
        assert (again / path.relative_to(zoo)).read_bytes() == path.read_bytes()
