"""subset_sum: the strong-lottery-ticket construction of Pensia et al. 2020, run exactly on small MLPs.

"Optimal Lottery Tickets via SubsetSum: Logarithmic Over-Parameterization is Sufficient" (NeurIPS 2020)
shows that a random ReLU network twice as deep, and wider by a log factor, contains a subnetwork that
approximates any target network; this module finds that subnetwork by pruning alone.

Construction, for each target layer y = W x + b (W: out x in) of an MLP:

- Two random layers replace it: U (m x in) then V (out x m), m = 2n * in + n hidden units, with a ReLU
  between them (the deep MLP applies one after every hidden layer, so the target's own ReLUs stay
  where they were: after each V but the last).
- Weights (positive/negative parts, the paper's Lemma): w x = w ReLU(x) - w ReLU(-x). Input neuron j
  owns 2n units. Its n "positive" units have U[unit, j] = u > 0 and compute u ReLU(x_j); its n
  "negative" units have u < 0 and compute |u| ReLU(-x_j). The mask keeps only U[unit, j] in each of
  these rows (U becomes block-diagonal), and in V it keeps, for target weight w_ij, a subset S+ of the
  positive units with sum_{k in S+} V[i, k] u_k ~ w_ij and a subset S- of the negative ones with
  sum_{k in S-} V[i, k] |u_k| ~ -w_ij: two subset sums of n random products each, chosen EXACTLY by
  mole.theory.subset_sum.closest_subsets (meet in the middle, n <= 40).
- Biases: n more units per layer have all their input weights pruned and a random bias c_k in (0, 1],
  so they output the constant c_k; target bias b_i is the subset sum of the products V[i, k] c_k.
  Every other bias of the random network is zero (and, as everywhere in mole, biases are never masked).
- Random network: |U| ~ U(0, 1) with the sign of each unit's part (the paper conditions on the signs of
  u; fixing n units per sign makes every subset sum use exactly n products), V ~ alpha_l * U(-1, 1).

Scaling (the paper assumes every target weight lies in [-1, 1], the range of the random products):
alpha_l = max(|W_l|, |b_l|) / target_range, so the scaled targets w / alpha_l lie in [-target_range,
target_range], inside [-1, 1], and are approximated by subset sums of products of U(-1, 1) draws as in
the paper. Instead of rescaling the output afterwards, V is drawn from U(-alpha_l, alpha_l): the products
then carry alpha_l and the pruned network computes f itself (equivalently: the same subsets approximate
w / alpha_l from unscaled products; ReLU's positive homogeneity lets the scale sit anywhere).
target_range defaults to 0.5, not 1: subset sums of products thin out towards +-1 (the product density
vanishes there), and with n <= 20 some of the thousands of weights draw too few products of the needed
sign to reach a target near the edge. Measured on a 64-16-16-10 digits MLP (seeds 0 and 1): at n = 20
the worst weight error is 0.4-1.1 with range 1 against 0.003-0.7 with range 0.5, and the worst logit
error 1.1-2.1 against 0.005-0.01; at n = 24 both ranges match the target's test accuracy.

So `n` is the number of random products per subset sum: 2n units per input neuron plus n bias units.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mole.baselines.base import (
    GROUP_SIZE,
    Baseline,
    Row,
    architecture_of,
    by_member,
    check_task,
    full_row,
    json_column,
    run_digest,
)
from mole.data import TaskData
from mole.errors import ConfigError
from mole.nets import Params
from mole.nets.mlp import MLPArchitecture
from mole.theory.subset_sum import MITM_MAX_N, closest_subsets
from mole.zoo import pruning
from mole.zoo.train import evaluate_stacked
from mole.zoo.variants.base import check_known
from mole.zoo.variants.supermask import derive_seed

NS = (4, 8, 12, 16, 20, 24)  # default sizes: the sweep takes ~5 s on one core for a 64-16-16-10 MLP
TARGET_RANGE = 0.5  # targets scaled into [-0.5, 0.5] (see the module docstring)


# ---------------------------------------------------------------------------- the construction
@dataclass
class Ticket:
    """The pruned random network approximating one target MLP.

    init: the random network (unstacked params of `arch`); mask: bool over every param (biases True);
    errors: |target - approximation| of every weight's positive and negative part and every bias;
    active: which of them act on non-negative inputs (positive parts and biases): all that matters
    when every layer's input is >= 0, as for image pixels and ReLU outputs.
    """

    target: MLPArchitecture
    arch: MLPArchitecture
    n: int
    seed: int
    scales: list[float]  # alpha_l per target layer
    init: Params
    mask: Params
    errors: np.ndarray
    active: np.ndarray

    @property
    def params(self) -> Params:
        """The effective params: init * mask (exact zeros where pruned)."""
        return {k: torch.where(self.mask[k], v, torch.zeros_like(v)) for k, v in self.init.items()}


def deep_hidden(target: MLPArchitecture, n: int) -> list[int]:
    """Hidden widths of the 2x-deep network: [m_0, h_0, m_1, h_1, ..., m_last], m_l = (2 in_l + 1) n."""
    widths = [target.in_features, *target.hidden]
    out: list[int] = []
    for layer, d_in in enumerate(widths):
        out += [(2 * d_in + 1) * n] + ([target.hidden[layer]] if layer < len(target.hidden) else [])
    return out


def check_n(n: Any, field: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MITM_MAX_N:
        raise ConfigError(
            field, f"must be an integer in [1, {MITM_MAX_N}] (the exact subset-sum solver's limit), got {n!r}"
        )
    return n


def check_range(value: Any, field: str = "target_range") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(
            field, f"must be in (0, 1] (the scaled targets' range inside [-1, 1]), got {value!r}"
        )
    return float(value)


def prune_random_network(
    target: MLPArchitecture,
    params: Params,
    n: int,
    seed: int,
    target_range: float = TARGET_RANGE,
    field: str = "n",
) -> Ticket:
    """Draw the 2x-deep random network and prune it to approximate the target MLP (see the module docstring).

    Args:
        target: the target MLP's architecture.
        params: its unstacked params (layers.{l}.weight (out, in), layers.{l}.bias (out,)).
        n: random products per subset sum, 1..40.
        seed: seed of the random network (one torch generator, drawn layer by layer on CPU).
        target_range: each layer's targets are scaled into [-target_range, target_range], in (0, 1].
        field: config field named when n is out of range.
    """
    check_n(n, field)
    check_range(target_range)
    arch = MLPArchitecture(target.input_shape, target.num_classes, deep_hidden(target, n))
    g = torch.Generator().manual_seed(int(seed))
    init: Params = {}
    mask: Params = {}
    errors, active, scales = [], [], []
    for layer in range(len(target.hidden) + 1):
        w = params[f"layers.{layer}.weight"].detach().double().cpu()  # (out, in)
        b = params[f"layers.{layer}.bias"].detach().double().cpu()  # (out,)
        d_out, d_in = w.shape
        units = 2 * n * d_in  # identity units; the n bias units follow them
        alpha = max(float(w.abs().max()), float(b.abs().max()), 1e-12) / target_range
        scales.append(alpha)

        # random layers: U (m, in) with the sign of each unit's part, V (out, m) ~ alpha U(-1, 1)
        sign = torch.ones(2 * d_in + 1, n)
        sign[1 : 2 * d_in : 2] = -1  # rows j*2n .. j*2n+n-1 positive, the next n negative, bias units +
        u = torch.rand(units + n, d_in, generator=g) * sign.reshape(-1, 1)  # (m, in)
        u_bias = torch.zeros(units + n)
        u_bias[units:] = 1 - torch.rand(n, generator=g)  # c_k in (0, 1]
        v = (torch.rand(d_out, units + n, generator=g) * 2 - 1) * alpha  # (out, m)
        i0, i1 = f"layers.{2 * layer}", f"layers.{2 * layer + 1}"
        init.update(
            {f"{i0}.weight": u, f"{i0}.bias": u_bias, f"{i1}.weight": v, f"{i1}.bias": torch.zeros(d_out)}
        )

        # U's mask: unit (j, part, k) keeps only its weight from input j; bias units keep none
        rows = torch.arange(units)
        keep_u = torch.zeros(units + n, d_in, dtype=torch.bool)
        keep_u[rows, rows // (2 * n)] = True
        # subset-sum problems, one row of n products each (float64 of the stored float32 weights)
        u_id = u[rows, rows // (2 * n)].double().abs().reshape(d_in, 2, n)  # (in, part, k): |u|
        v_id = v[:, :units].double().reshape(d_out, d_in, 2, n)  # (out, in, part, k)
        products = v_id * u_id  # (out, in, part, k)
        bias_products = v[:, units:].double() * u_bias[units:].double()  # (out, n)
        values = torch.cat([products.reshape(-1, n), bias_products])  # (2*out*in + out, n)
        targets = torch.cat([torch.stack([w, -w], dim=-1).reshape(-1), b])  # part 0: w, part 1: -w
        chosen, sums = closest_subsets(values.numpy(), targets.numpy(), field)
        errors.append(np.abs(targets.numpy() - sums))
        active.append(np.concatenate([np.tile([True, False], d_out * d_in), np.ones(d_out, dtype=bool)]))
        chosen = torch.from_numpy(chosen)
        keep_v = torch.cat(
            [chosen[: 2 * d_out * d_in].reshape(d_out, units), chosen[2 * d_out * d_in :]], dim=1
        )  # (out, m): same unit order as v
        mask.update({f"{i0}.weight": keep_u, f"{i1}.weight": keep_v})
        mask.update(
            {
                f"{i0}.bias": torch.ones(units + n, dtype=torch.bool),
                f"{i1}.bias": torch.ones(d_out, dtype=torch.bool),
            }
        )
    init = {k: init[k] for k in arch.param_shapes()}
    mask = {k: mask[k] for k in arch.param_shapes()}
    return Ticket(
        target, arch, n, int(seed), scales, init, mask, np.concatenate(errors), np.concatenate(active)
    )


# ---------------------------------------------------------------------------- measurements
@torch.no_grad()
def compare(ticket: Ticket, target_params: Params, data: TaskData) -> dict[str, float]:
    """Weight error, output (logit) error on the test inputs, and both networks' test accuracy."""
    x, y = data.split("test")
    device = x.device
    f = ticket.target.forward_stacked({k: v[None].to(device) for k, v in target_params.items()}, x)[0]
    g = ticket.arch.forward_stacked({k: v[None].to(device) for k, v in ticket.params.items()}, x)[0]
    diff = (f - g).abs().double()  # (B, classes)
    weights = {k: m for k, m in ticket.mask.items() if k.endswith("weight")}
    kept = int(sum(int(m.sum()) for m in weights.values()))
    total = int(sum(m.numel() for m in weights.values()))
    return {
        "weight_err_max": float(ticket.errors.max()),
        "weight_err_mean": float(ticket.errors.mean()),
        "active_err_max": float(ticket.errors[ticket.active].max()),
        "output_err_max": float(diff.max()),
        "output_err_mean": float(diff.mean()),
        "target_test_acc": float((f.argmax(-1) == y).double().mean()),
        "pruned_test_acc": float((g.argmax(-1) == y).double().mean()),
        "agreement": float((f.argmax(-1) == g.argmax(-1)).double().mean()),
        "kept_weights": kept,
        "sparsity": 1 - kept / total,
    }


def target_of(
    target: Mapping[str, Any] | tuple[MLPArchitecture, Params], field: str = "target"
) -> tuple[MLPArchitecture, Params]:
    """(architecture, unstacked params) of a target given as a zoo row or as (MLPArchitecture, params)."""
    if isinstance(target, tuple):
        arch, params = target
    else:
        arch = architecture_of(target)
        params = arch.unflatten(torch.from_numpy(np.asarray(target["params"], dtype=np.float32)))
    if not isinstance(arch, MLPArchitecture):
        raise ConfigError(field, f"the subset-sum construction needs an mlp target, got {arch.name}")
    return arch, params


def subset_sum_experiment(
    target: Mapping[str, Any] | tuple[MLPArchitecture, Params],
    data: TaskData,
    ns: Sequence[int] = NS,
    seed: int = 0,
    target_range: float = TARGET_RANGE,
    on_n: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Prune a random 2x-deep network to the target for every n; one row of measurements per n.

    Args:
        target: a trained MLP as a zoo row (e.g. a final dense digits member) or (MLPArchitecture, params).
        data: its task; output errors and accuracies are measured on the test split.
        ns: random products per subset sum (each <= 40).
        seed: seed of the random network (the same for every n).
        target_range: the range the scaled targets lie in (see the module docstring).
        on_n: progress: called as on_n(done, len(ns)) after each n.

    Returns:
        Rows with n, units per input neuron (2n), the deep network's hidden widths and size, kept
        weights and sparsity, weight_err_max / _mean (over every weight part and bias), active_err_max
        (positive parts and biases only, see `Ticket`), output_err_max /
        _mean (|f(x) - f^(x)| over test inputs and logits), target / pruned test accuracy, prediction
        agreement and seconds.
    """
    arch, params = target_of(target)
    ns = [check_n(n) for n in ns]
    rows = []
    for n in ns:
        start = time.perf_counter()
        ticket = prune_random_network(arch, params, n, seed, target_range)
        seconds = time.perf_counter() - start
        m = compare(ticket, params, data)
        rows.append(
            {
                "n": n,
                "target_range": target_range,
                "units_per_input": 2 * n,
                "hidden": "-".join(map(str, ticket.arch.hidden)),
                "num_params": ticket.arch.num_params,
                **m,
                "seconds": round(seconds, 3),
            }
        )
        if on_n is not None:
            on_n(len(rows), len(ns))
    return rows


def plot_subset_sum(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Errors against n on a log scale (left) and test accuracy against n (right), as a PNG (atomic).

    Args:
        rows: `subset_sum_experiment` rows.
        path: the PNG file.
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mole.theory.io import save_figure

    n = [r["n"] for r in rows]
    fig, (ax, acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, style in (
        ("weight_err_max", "o-"),
        ("weight_err_mean", "o--"),
        ("active_err_max", "^:"),
        ("output_err_max", "s-"),
        ("output_err_mean", "s--"),
    ):
        ax.plot(n, [max(r[key], 1e-12) for r in rows], style, label=key.replace("_", " "))
    ax.set_yscale("log")
    ax.set_xlabel("n (random products per subset sum)")
    ax.set_ylabel("|target - pruned random network|")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    acc.plot(n, [r["target_test_acc"] for r in rows], "k--", label="target")
    acc.plot(n, [r["pruned_test_acc"] for r in rows], "o-", label="pruned 2x-deep random net")
    acc.set_xlabel("n")
    acc.set_ylabel("test accuracy")
    acc.grid(True, alpha=0.3)
    acc.legend()
    fig.suptitle(title or "Subset-sum lottery tickets (Pensia et al. 2020)")
    fig.tight_layout()
    return save_figure(fig, path)


# ---------------------------------------------------------------------------- the baseline
class SubsetSumBaseline(Baseline):
    """Each MLP member -> the pruned 2x-deep random network approximating it (one row per member and n).

    Rows: architecture mlp with the deep hidden widths, `init_params` the random network, `mask` its
    mask (biases True), `params` = init_params * mask, `sparsity` the fraction of weights removed, no
    training hyperparameters (nothing is trained); `seed` seeds the random network (derived from the
    config's seed and the member index); extra holds the target's member id, n, the layer scales and
    the errors of `compare` on the given data.

    Args:
        n: random products per subset sum, 1..40; a scalar or a list of levels (default 4..24).
        seed: base seed of the random networks.
        target_range: the range the targets are scaled into, in (0, 1] (default 0.5).
    """

    name = "subset_sum"
    DEFAULTS: dict[str, Any] = {"n": list(NS), "seed": 0, "target_range": TARGET_RANGE}

    def __init__(self, group_size: int = GROUP_SIZE, **options: Any):
        check_known(self.name, options, (*self.DEFAULTS, "group_size"), section="baselines")
        opts = {**self.DEFAULTS, **options}
        ns = opts["n"] if isinstance(opts["n"], (list, tuple)) else [opts["n"]]
        if not ns:
            raise ConfigError(self.field("n"), "an empty list of levels")
        self.ns = [check_n(v, self.field("n")) for v in ns]
        if len(set(self.ns)) != len(self.ns):
            raise ConfigError(self.field("n"), f"repeated levels in {ns}")
        seed = opts["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(self.field("seed"), f"must be a non-negative integer, got {seed!r}")
        self.seed = seed
        self.target_range = check_range(opts["target_range"], self.field("target_range"))
        super().__init__(group_size, **opts)

    def configs(self) -> list[dict]:
        return [{"n": n, "seed": self.seed, "target_range": self.target_range} for n in self.ns]

    def run(self, members: Sequence[Mapping[str, Any]], data: TaskData, config: dict) -> list[Row]:
        digest = run_digest(self.name, members, data)
        tag = f"{self.name}-n{config['n']}-seed{config['seed']}-r{config['target_range']!r}"
        out = []
        for rows in by_member(members):
            row = rows[-1]
            check_task(row, data)
            arch, params = target_of(row, self.field("members"))
            seed = derive_seed(config["seed"], self.name, int(row["member_index"]))
            ticket = prune_random_network(
                arch, params, config["n"], seed, config["target_range"], self.field("n")
            )
            out.append(self.record(ticket, row, params, data, digest, tag, config))
        return out

    def record(
        self, ticket: Ticket, row: Row, params: Params, data: TaskData, digest: str, tag: str, config: dict
    ) -> Row:
        device = data.x_train.device
        arch = ticket.arch
        effective = {k: v[None].to(device) for k, v in ticket.params.items()}  # (1, ...)
        metrics = evaluate_stacked(arch.forward_stacked, effective, data)
        masks = {k: ticket.mask[k][None] for k in arch.weight_names()}
        flat = arch.flatten(effective).float().cpu()[0]
        extra = {
            "target_member_id": row["member_id"],
            "target_zoo": row.get("zoo"),
            "n": ticket.n,
            "units_per_input": 2 * ticket.n,
            "scales": ticket.scales,
            **compare(ticket, params, data),
            "layer_sparsity": {k: float(v[0]) for k, v in pruning.layer_sparsity(masks).items()},
        }
        return full_row(
            {
                "zoo": row.get("zoo"),
                "member_id": f"{row.get('zoo')}-{digest[:8]}-{int(row['member_index']):05d}-{tag}",
                "member_index": int(row["member_index"]),
                "variant": self.name,
                "variant_config": json.dumps(config, sort_keys=True),
                "task": row["task"],
                "task_options": json.dumps(json_column(row.get("task_options")), sort_keys=True),
                "architecture": arch.name,
                "arch_options": json.dumps(arch.config(), sort_keys=True),
                "seed": ticket.seed,
                "step": 0,
                "epoch": 0.0,
                "final": True,
                **{k: float(v[0]) for k, v in metrics.items()},
                "num_params": arch.num_params,
                "nonzero_params": int((flat != 0).sum()),
                "sparsity": float(pruning.sparsity_of(masks)[0]),
                "params": flat.numpy(),
                "mask": pruning.full_mask(arch, masks)[0].numpy(),
                "init_params": arch.flatten({k: v[None] for k, v in ticket.init.items()})[0].numpy(),
                "extra": json.dumps(extra, sort_keys=True),
            }
        )
