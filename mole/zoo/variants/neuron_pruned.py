"""neuron_pruned: a narrower network from a trained one, by merging redundant neurons or removing weak ones.

Works on the hidden fully connected layers: all of an MLP's, and the CNN's `fcs` head (its convolutions
are kept). Layers are reduced first to last, each from activations of the already reduced network on
a sample of the training split, so later merges see the function as it is by then.

merge: neuron j is folded into neuron i when its activation vector is well predicted by i's, by least
    squares with an intercept (a_j ≈ c·a_i + d): j's outgoing weights are added to i's times c and to the
    next bias times d, then j is dropped. The greedy step takes the pair with the smallest change it
    causes in the next layer's pre-activations, ||w_j||·||a_j - c·a_i - d||, which is
    ||w_j||·std(a_j)·sqrt(1 - ρ_ij²): near-collinear (cosine of centred activations ρ ≈ ±1) neurons
    with small outgoing weights go first. Exact duplicates and dead neurons cost zero.
remove: keep the neurons with the largest ||a_j||·||w_j|| (activation norm times outgoing weight norm).
"""

from __future__ import annotations

import json
from dataclasses import replace

import torch
import torch.nn.functional as F

from mole.errors import ConfigError
from mole.nets import Architecture, Params, build_architecture
from mole.nets.cnn import CNNArchitecture
from mole.nets.functional import stacked_linear
from mole.nets.mlp import MLPArchitecture
from mole.zoo.variants.base import GroupContext, Record, Snapshot, Variant, check_known

METHODS = ("merge", "remove")
OPTIONS = ("width_fraction", "width", "method", "samples")
CHUNK = 512  # examples per forward pass: bounds the CNN's (N, K*C, *S) feature maps


# ---------------------------------------------------------------------------- the dense head
def _prefix(arch: Architecture) -> str:
    """Name prefix of the fully connected layers whose hidden widths we reduce."""
    if isinstance(arch, MLPArchitecture):
        return "layers"
    if isinstance(arch, CNNArchitecture):
        return "fcs"
    raise ConfigError("variants.neuron_pruned", f"supports the mlp and cnn architectures, not {arch.name!r}")


def head_input(arch: Architecture, params: Params, x: torch.Tensor) -> torch.Tensor:
    """What enters the first fully connected layer: (N, F) shared (MLP) or (K, N, F) (CNN)."""
    if isinstance(arch, MLPArchitecture):
        return x.flatten(-len(arch.input_shape))
    return arch.features_stacked(params, x)  # the CNN's conv blocks, 1-D or 2-D


def hidden_activations(arch: Architecture, params: Params, x: torch.Tensor, layer: int) -> torch.Tensor:
    """ReLU outputs (K, N, width) of hidden layer `layer` of the fully connected head."""
    p, h = _prefix(arch), head_input(arch, params, x)
    for i in range(layer + 1):
        h = F.relu(stacked_linear(h, params[f"{p}.{i}.weight"], params[f"{p}.{i}.bias"]))
    return h


# ---------------------------------------------------------------------------- choosing neurons
def merge_neurons(
    acts: torch.Tensor, w_next: torch.Tensor, b_next: torch.Tensor, target: int
) -> torch.Tensor:
    """Greedily fold neurons into their best linear twin until `target` remain, for all K members at once.

    Args:
        acts: (K, N, h) activations of the layer on the sample.
        w_next: (K, out, h) outgoing weights, updated in place (merged neurons' columns zeroed).
        b_next: (K, out) next layer's bias, updated in place (the intercepts).
        target: neurons to keep.

    Returns:
        (K, target) sorted indices of the kept neurons.
    """
    k, n, h = acts.shape
    a = acts.double()
    mu = a.mean(1)  # (K, h)
    ac = a - mu[:, None]
    cov = ac.transpose(1, 2) @ ac / n  # (K, h, h)
    var = cov.diagonal(dim1=1, dim2=2)  # (K, h)
    const = var <= 1e-12 * var.amax(1, keepdim=True).clamp_min(1e-30)  # a constant neuron predicts nothing
    # coef[k, j, i] = c and icpt[k, j, i] = d of the least-squares fit a_j ≈ c·a_i + d
    coef = torch.where(const[:, None, :], 0.0, cov / var[:, None, :].clamp_min(1e-30))  # (K, h, h)
    resid = (var[:, :, None] - coef * cov).clamp_min(0).sqrt()  # (K, h, h) rms of a_j - c·a_i - d
    icpt = mu[:, :, None] - coef * mu[:, None, :]  # (K, h, h)
    alive = torch.ones(k, h, dtype=torch.bool, device=acts.device)
    eye = torch.eye(h, dtype=torch.bool, device=acts.device)
    rows = torch.arange(k, device=acts.device)
    # Every step removes exactly one neuron from every member, so the K greedy runs stay in lockstep.
    for _ in range(h - target):
        cost = w_next.double().norm(dim=1)[:, :, None] * resid  # (K, h_j, h_i)
        cost = cost.masked_fill(eye | ~alive[:, :, None] | ~alive[:, None, :], float("inf"))
        best = cost.flatten(1).argmin(1)  # (K,)
        j, i = best // h, best % h
        wj = w_next[rows, :, j].clone()  # (K, out)
        w_next[rows, :, i] += coef[rows, j, i].to(wj.dtype)[:, None] * wj
        b_next += icpt[rows, j, i].to(wj.dtype)[:, None] * wj
        w_next[rows, :, j] = 0
        alive[rows, j] = False
    return alive.nonzero()[:, 1].view(k, target)  # row-major: sorted within each member


def remove_neurons(acts: torch.Tensor, w_next: torch.Tensor, target: int) -> torch.Tensor:
    """(K, target) sorted indices of the neurons with the largest ||a_j||·||w_j|| (K, N, h), (K, out, h)."""
    score = acts.norm(dim=1) * w_next.norm(dim=1)  # (K, h)
    return score.topk(target, dim=1).indices.sort(1).values


@torch.no_grad()
def reduce_width(
    arch: Architecture, params: Params, x: torch.Tensor, widths: list[int], method: str
) -> tuple[Architecture, Params]:
    """The narrower architecture and its params, hidden layer by hidden layer.

    Args:
        arch: the trained network's architecture (mlp or cnn).
        params: its stacked params (K, ...); not modified.
        x: (N, *input_shape) sample of inputs the activations are measured on.
        widths: target width of every hidden fully connected layer (each <= the current width).
        method: "merge" or "remove".
    """
    p = _prefix(arch)
    params = {n: t.detach().clone() for n, t in params.items()}
    for layer, target in enumerate(widths):
        w, b = params[f"{p}.{layer}.weight"], params[f"{p}.{layer}.bias"]  # (K, h, in), (K, h)
        w_next, b_next = params[f"{p}.{layer + 1}.weight"], params[f"{p}.{layer + 1}.bias"]  # (K, out, h)
        if target == w.shape[1]:
            continue
        chunks = [hidden_activations(arch, params, xb, layer) for xb in x.split(CHUNK)]
        acts = torch.cat(chunks, 1)  # (K, N, h)
        keep = (
            merge_neurons(acts, w_next, b_next, target)
            if method == "merge"
            else remove_neurons(acts, w_next, target)
        )
        params[f"{p}.{layer}.weight"] = w.gather(1, keep[:, :, None].expand(-1, -1, w.shape[2]))  # (K, t, in)
        params[f"{p}.{layer}.bias"] = b.gather(1, keep)  # (K, t)
        params[f"{p}.{layer + 1}.weight"] = w_next.gather(2, keep[:, None, :].expand(-1, w_next.shape[1], -1))
    small = build_architecture(
        arch.name, arch.input_shape, arch.num_classes, **{**arch.options(), "hidden": widths}
    )
    return small, {n: params[n].contiguous() for n in small.param_shapes()}


# ---------------------------------------------------------------------------- the variant
class NeuronPruned(Variant):
    """Narrow each trained member's hidden layers by merging or removing neurons (no fine-tuning).

    Args:
        width_fraction: kept share of every hidden layer, in (0, 1] (rounded, at least 1 neuron);
            a list gives one config each. Default [0.75, 0.5] when `width` is not set either.
        width: alternatively, the number of neurons every hidden layer is cut to (narrower layers
            stay as they are); an integer or a list of them.
        method: "merge" or "remove" (or a list of both).
        samples: training examples the activations are measured on.
    """

    name = "neuron_pruned"

    def __init__(self, **options):
        f = f"variants.{self.name}"
        check_known(self.name, options, OPTIONS)
        if "width" in options and "width_fraction" in options:
            raise ConfigError(f"{f}.width", "give either width or width_fraction, not both")
        self.size_key = "width" if "width" in options else "width_fraction"
        if self.size_key == "width":
            self.sizes = _levels(
                options["width"], f"{f}.width", lambda v: _is_int(v) and v >= 1, "an integer >= 1"
            )
        else:
            fractions = options.get("width_fraction", [0.75, 0.5])
            self.sizes = _levels(
                fractions, f"{f}.width_fraction", lambda v: _is_number(v) and 0 < v <= 1, "in (0, 1]"
            )
        self.methods = _levels(
            options.get("method", "merge"),
            f"{f}.method",
            lambda v: v in METHODS,
            f"one of {', '.join(METHODS)}",
        )
        self.samples = options.get("samples", 1024)
        if not _is_int(self.samples) or self.samples < 2:
            raise ConfigError(f"{f}.samples", f"must be an integer >= 2, got {self.samples!r}")
        super().__init__(**options)

    def configs(self) -> list[dict]:
        return [
            {"method": m, self.size_key: s, "samples": self.samples} for m in self.methods for s in self.sizes
        ]

    def tag(self, config: dict) -> str:
        short = "wf" if "width_fraction" in config else "w"
        return f"{self.name}-{config['method']}-{short}{config[self.size_key]!r}-n{config['samples']}"

    def target_widths(self, hidden: list[int], config: dict) -> list[int]:
        if "width" in config:
            return [min(h, config["width"]) for h in hidden]
        return [max(1, round(config["width_fraction"] * h)) for h in hidden]

    def check(self, arch: Architecture) -> None:
        _prefix(arch)  # mlp or cnn
        if not arch.hidden:
            raise ConfigError(
                f"variants.{self.name}", f"this {arch.name} has no hidden fully connected layer"
            )

    def run(self, ctx: GroupContext, config: dict) -> list[Record]:
        arch, final = ctx.arch, ctx.dense().final
        self.check(arch)
        widths = self.target_widths(arch.hidden, config)
        sample = ctx.data.x_train[: config["samples"]]
        small, params = reduce_width(arch, final.params, sample, widths, config["method"])
        small_ctx = replace(ctx, arch=small)
        metrics = small_ctx.evaluate(params)
        with torch.no_grad():  # max |logit difference| to the dense member over the test split
            diffs = [
                (arch.forward_stacked(final.params, xb) - small.forward_stacked(params, xb))
                .abs()
                .flatten(1)
                .amax(1)
                for xb in ctx.data.x_test.split(CHUNK)
            ]
            change = torch.stack(diffs, 1).amax(1).cpu()  # (K,)
        extra = [
            json.dumps(
                {
                    "function_change": float(change[i]),
                    "neurons_before": sum(arch.hidden),
                    "neurons_after": sum(widths),
                    "hidden_before": list(arch.hidden),
                    "hidden_after": widths,
                    "num_params_before": arch.num_params,
                    "dense_test_acc": float(final.metrics["test_acc"][i]),
                    "samples": config["samples"],
                },
                sort_keys=True,
            )
            for i in range(ctx.k)
        ]
        snap = Snapshot(final.step, params, metrics)
        levels = {k: v for k, v in config.items() if k != "samples"}  # samples is in extra
        return small_ctx.records(self.tag(config), self.name, levels, snap, final=True, extra=extra)


# ---------------------------------------------------------------------------- option checks
def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _levels(value, field: str, ok, what: str) -> list:
    """A scalar or a non-empty list of distinct levels, each checked; returns the list."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ConfigError(field, "an empty list of levels")
    for v in values:
        if not ok(v):
            raise ConfigError(field, f"must be {what}, got {v!r}")
    if len({json.dumps(v) for v in values}) != len(values):
        raise ConfigError(field, f"repeated levels in {values}")
    return values
