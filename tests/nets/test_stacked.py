import pytest
import torch

from mole.errors import ConfigError
from mole.nets import ARCHITECTURES, architecture_from_config, build_architecture
from mole.nets.functional import members_to_channels, stacked_bias, stacked_conv

CASES = [
    ("mlp", (1, 8, 8), {"hidden": [16, 12]}),
    ("mlp", (3, 4, 4), {"hidden": [5]}),
    ("cnn", (1, 8, 8), {"channels": [4, 6], "hidden": [10]}),
    ("cnn", (3, 12, 12), {"channels": [5], "kernel_size": 5, "hidden": []}),
    ("mlp", (1, 40), {"hidden": [8]}),  # MNIST-1D signals, flattened
    ("cnn", (1, 40), {"channels": [4, 6], "kernel_size": 5, "hidden": [10]}),  # 1-D convolutions
    ("cnn", (2, 9), {"channels": [3], "kernel_size": 3, "hidden": []}),  # odd length: pooling floors
]


@pytest.mark.parametrize("name,shape,options", CASES)
def test_stacked_equals_plain_modules(name, shape, options):
    arch = build_architecture(name, shape, 10, **options)
    k, b = 5, 7
    params = arch.init_stacked(range(k), torch.linspace(0.5, 2.0, k))
    shared = torch.rand(b, *shape)
    per_member = torch.rand(k, b, *shape)
    out_shared = arch.forward_stacked(params, shared)  # (K, B, C)
    out_member = arch.forward_stacked(params, per_member)
    assert out_shared.shape == (k, b, 10)
    # Tight, not exact: the stacked CNN is one grouped convolution, nn.Conv* may sum in another order.
    for i in range(k):
        module = arch.to_module(params, index=i)
        torch.testing.assert_close(out_shared[i], module(shared), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out_member[i], module(per_member[i]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,shape,options", CASES)
def test_stacked_gradients_equal_plain_modules(name, shape, options):
    arch = build_architecture(name, shape, 10, **options)
    k, b = 3, 6
    params = {n: p.requires_grad_(True) for n, p in arch.init_stacked(range(k)).items()}
    x, y = torch.rand(k, b, *shape), torch.randint(0, 10, (k, b))
    loss = sum(
        torch.nn.functional.cross_entropy(out, t) for out, t in zip(arch.forward_stacked(params, x), y)
    )
    grads = torch.autograd.grad(loss, list(params.values()))
    for i in range(k):
        module = arch.to_module(params, index=i)
        torch.nn.functional.cross_entropy(module(x[i]), y[i]).backward()
        for g, (n, p) in zip(grads, module.named_parameters()):
            torch.testing.assert_close(g[i], p.grad, rtol=1e-5, atol=1e-6, msg=n)


@pytest.mark.parametrize("shape,options", [(s, o) for n, s, o in CASES if n == "mlp"])
def test_mlp_hand_written_gradients_equal_autograd(shape, options):
    """loss_grads_stacked: the gradients of each member's mean cross-entropy, and beta * out + them."""
    arch = build_architecture("mlp", shape, 10, **options)
    k, b = 4, 6
    params = {n: p.requires_grad_(True) for n, p in arch.init_stacked(range(k)).items()}
    x, y = torch.rand(k, b, *shape), torch.randint(0, 10, (k, b))
    loss = sum(
        torch.nn.functional.cross_entropy(out, t) for out, t in zip(arch.forward_stacked(params, x), y)
    )
    expected = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    got = arch.loss_grads_stacked(params, x, y)
    before = {n: torch.randn_like(p) for n, p in params.items()}
    accumulated = arch.loss_grads_stacked(
        params, x, y, out={n: t.clone() for n, t in before.items()}, beta=0.9
    )
    for n in params:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-5, atol=1e-6, msg=n)
        torch.testing.assert_close(accumulated[n], 0.9 * before[n] + expected[n], rtol=1e-5, atol=1e-6, msg=n)
    assert build_architecture("cnn", (1, 8, 8), 10, channels=[2]).loss_grads_stacked is None  # autograd


@pytest.mark.parametrize("name,shape,options", CASES)
def test_module_round_trip(name, shape, options):
    arch = build_architecture(name, shape, 10, **options)
    modules = [arch.build_module() for _ in range(3)]
    params = arch.from_modules(modules)
    assert list(params) == list(modules[0].state_dict())
    for i, m in enumerate(modules):
        for n, p in m.state_dict().items():
            assert torch.equal(params[n][i], p)
    flat = arch.flatten(params)
    assert flat.shape == (3, arch.num_params) == (3, sum(p.numel() for p in modules[0].parameters()))
    back = arch.unflatten(flat)
    assert all(torch.equal(back[n], params[n]) for n in params)
    rebuilt = architecture_from_config(name, arch.config())
    assert rebuilt.param_shapes() == arch.param_shapes()


def test_init_depends_only_on_member_seed():
    arch = build_architecture("mlp", (1, 8, 8), 10, hidden=[8])
    a = arch.init_stacked([11, 22, 33])
    b = arch.init_stacked([33, 11])
    for n in a:
        assert torch.equal(a[n][0], b[n][1]) and torch.equal(a[n][2], b[n][0])
        assert not torch.equal(a[n][0], a[n][1])
    scaled = arch.init_stacked([11], [2.0])
    torch.testing.assert_close(scaled["layers.0.weight"][0], 2 * a["layers.0.weight"][0])


def test_init_matches_pytorch_default_bounds():
    arch = build_architecture("mlp", (1, 8, 8), 10, hidden=[32])
    w = arch.init_stacked(range(4))["layers.0.weight"]
    bound = 1 / 64**0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound


def test_bad_architecture_options():
    with pytest.raises(ConfigError, match="arch_options.hidden"):
        build_architecture("mlp", (1, 8, 8), 10, hidden=[0])
    with pytest.raises(ConfigError, match="arch_options.kernel_size"):
        build_architecture("cnn", (1, 8, 8), 10, kernel_size=4)
    with pytest.raises(ConfigError, match="arch_options.channels"):
        build_architecture("cnn", (1, 8, 8), 10, channels=[2, 2, 2, 2])
    with pytest.raises(ConfigError, match="arch_options"):
        build_architecture("mlp", (1, 8, 8), 10, depth=3)
    with pytest.raises(ConfigError, match="valid: cnn, mlp"):
        ARCHITECTURES.get("resnet")


def test_cnn_convolution_follows_the_input_shape():
    signal = build_architecture("cnn", (1, 40), 10, channels=[4, 8], kernel_size=5, hidden=[16])
    image = build_architecture("cnn", (1, 8, 8), 10, channels=[4, 8], kernel_size=5, hidden=[16])
    assert signal.param_shapes()["convs.1.weight"] == (8, 4, 5)  # (out, in, k)
    assert image.param_shapes()["convs.1.weight"] == (8, 4, 5, 5)  # (out, in, kh, kw)
    assert signal.flat == 8 * 10 and image.flat == 8 * 2 * 2  # 40 -> 20 -> 10; 8x8 -> 4x4 -> 2x2
    assert all(type(c) is torch.nn.Conv1d for c in signal.build_module().convs)
    assert all(type(c) is torch.nn.Conv2d for c in image.build_module().convs)
    with pytest.raises(ConfigError, match=r"architecture: cnn needs inputs shaped \(C, L\) or \(C, H, W\)"):
        build_architecture("cnn", (40,), 10)
    with pytest.raises(ConfigError, match="arch_options.channels"):
        build_architecture("cnn", (1, 3), 10, channels=[2, 2])  # 3 -> 1 -> 0


@pytest.mark.parametrize(
    "shape,kernel", [((3, 8, 8), (4, 3, 3, 3)), ((3, 7, 6), (2, 3, 5, 5)), ((2, 11), (5, 2, 3))]
)
@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("bias_apart", [False, True])
def test_stacked_conv_equals_plain_convolutions(shape, kernel, k, bias_apart):
    """Forward and every gradient (kernel, bias, input) of stacked_conv against nn.Conv1d / nn.Conv2d,
    with the bias inside the call or added after it by stacked_bias."""
    b, pad, conv = (
        6,
        kernel[-1] // 2,
        torch.nn.functional.conv2d if len(shape) == 3 else torch.nn.functional.conv1d,
    )
    g = torch.Generator().manual_seed(0)
    x = torch.rand(k, b, *shape, generator=g, requires_grad=True)
    w = torch.randn(k, *kernel, generator=g, requires_grad=True)
    bias = torch.randn(k, kernel[0], generator=g, requires_grad=True)
    if bias_apart:
        out = stacked_bias(stacked_conv(members_to_channels(x), w, None, pad), bias)
    else:
        out = stacked_conv(members_to_channels(x), w, bias, pad)  # (B, K*O, *S)
    out = out.reshape(b, k, -1, *out.shape[2:]).transpose(0, 1)  # (K, B, O, *S)
    upstream = torch.randn(out.shape, generator=g)
    grads = torch.autograd.grad(out, [x, w, bias], upstream)
    for i in range(k):
        xi, wi, bi = (t[i].detach().requires_grad_(True) for t in (x, w, bias))
        ref = conv(xi, wi, bi, padding=pad)
        torch.testing.assert_close(out[i], ref, rtol=1e-5, atol=1e-5)
        for got, want in zip(grads, torch.autograd.grad(ref, [xi, wi, bi], upstream[i])):
            torch.testing.assert_close(got[i], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "shape,options",
    [((1, 8, 8), {"channels": [8, 16], "hidden": [32]}), ((1, 40), {"channels": [8, 16], "kernel_size": 5})],
)
def test_stacked_cnn_member_does_not_depend_on_its_company(shape, options):
    """Bitwise: a member's logits and gradients are the same whichever slice of members it trains in
    (worker processes train slices, and must give the same zoo as one process)."""
    arch = build_architecture("cnn", shape, 10, **options)
    k, b = 7, 16
    params = arch.init_stacked(range(k))
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(k, b, *shape, generator=g), torch.randint(0, 10, (k, b), generator=g)

    def run(lo, hi):
        p = {n: v[lo:hi].clone().requires_grad_(True) for n, v in params.items()}
        out = arch.forward_stacked(p, x[lo:hi])
        loss = torch.nn.functional.cross_entropy(out.flatten(0, 1), y[lo:hi].flatten(), reduction="sum")
        return [out.detach(), *torch.autograd.grad(loss, list(p.values()))]

    whole = run(0, k)
    for lo, hi in [(0, 1), (1, 3), (3, 7), (6, 7)]:
        part = run(lo, hi)
        for name, a, c in zip(["logits", *params], whole, part):
            assert torch.equal(a[lo:hi], c), (name, lo, hi)


def test_shared_input_conv_maps_come_out_channels_last():
    """Evaluation feeds every member one batch; its maps are pooled channels-last (the fast path)."""
    x, w = torch.rand(16, 1, 8, 8), torch.rand(4, 8, 1, 3, 3)
    out = stacked_conv(x, w, None, 1, shared=True)  # (B, K*O, 8, 8)
    assert out.is_contiguous(memory_format=torch.channels_last)
    plain = torch.nn.functional.conv2d(x, w.reshape(32, 1, 3, 3), padding=1)
    torch.testing.assert_close(out, plain, rtol=0, atol=0)
