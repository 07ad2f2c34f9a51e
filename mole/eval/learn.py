"""B9 (learning to learn) figures: prompt following of updates, the SGD steps an update is worth, and
how far an update moves from its start against the distance to the nearest training member."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from mole.data import TaskData
from mole.eval.alignment import spearman
from mole.nets import Architecture, Params
from mole.tokenizer import MemberTensors
from mole.tokenizer.canonical import match_order
from mole.zoo.plan import MemberPlan
from mole.zoo.train import evaluate_stacked, train_stacked


def prompt_following(prompted: Sequence[float], achieved: Sequence[float]) -> dict[str, float]:
    """Spearman, MAE and relative error |achieved - prompted| / prompted (mean and median) of one metric."""
    p, a = np.asarray(prompted, dtype=np.float64), np.asarray(achieved, dtype=np.float64)
    rel = np.abs(a - p) / np.maximum(np.abs(p), 1e-12)
    return {
        "n": int(len(p)),
        "spearman": spearman(p, a),
        "mae": float(np.mean(np.abs(a - p))) if len(p) else float("nan"),
        "rel_error_mean": float(rel.mean()) if len(p) else float("nan"),
        "rel_error_median": float(np.median(rel)) if len(p) else float("nan"),
    }


def median_plan(rows: Sequence[dict], seed: int = 0) -> MemberPlan:
    """The zoo's median hyperparameters as one member's plan (the most common optimizer and batch size)."""

    def common(key):
        values, counts = np.unique([r[key] for r in rows], return_counts=True)
        return values[np.argmax(counts)].item()

    return MemberPlan(
        index=0, seed=seed, lr=float(np.median([r["lr"] for r in rows])),
        weight_decay=float(np.median([r["weight_decay"] for r in rows])), init_scale=1.0,
        momentum=float(np.median([r["momentum"] for r in rows])), batch_size=int(common("batch_size")),
        epochs=1, optimizer=str(common("optimizer")),
    )  # fmt: skip


def sgd_curves(
    arch: Architecture,
    starts: Sequence[MemberTensors],
    data: TaskData,
    plan: MemberPlan,
    max_steps: int,
    every: int,
) -> tuple[np.ndarray, np.ndarray]:
    """SGD from each start with one plan (each start its own data order), stacked.

    Returns:
        (steps (S,), test loss (S, K)) at steps 0, every, 2 * every, ..., max_steps.
    """
    params = {n: torch.stack([m.params[n] for m in starts]).clone() for n in starts[0].params}  # (K, ...)
    per_epoch = max(1, len(data.y_train) // plan.batch_size)
    epochs = -(-max_steps // per_epoch)
    plans = [
        dataclasses.replace(plan, index=i, seed=plan.seed + i, epochs=epochs) for i in range(len(starts))
    ]
    steps = list(range(0, max_steps + 1, every))
    curve: dict[int, np.ndarray] = {}

    def keep(step: int, live: Params) -> None:
        curve[step] = evaluate_stacked(arch.forward_stacked, live, data)["test_loss"].numpy()

    train_stacked(
        arch.forward_stacked, params, data, plans, snapshot_steps=steps, on_snapshot=keep,
        grads=arch.loss_grads_stacked,  # as the zoo's members were trained
    )  # fmt: skip
    return np.asarray(steps), np.stack([curve[s] for s in steps])


def steps_to_reach(steps: np.ndarray, curve: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per column k, the first step at which curve[:, k] <= target[k]; inf if it never does.

    Args:
        steps: (S,) the curve's steps; curve: (S, K) test losses; target: (K,) losses to reach.
    """
    reached = curve <= np.asarray(target)[None, :]  # (S, K)
    first = np.where(reached.any(0), reached.argmax(0), -1)
    return np.where(first >= 0, steps[np.maximum(first, 0)], np.inf).astype(np.float64)


def flat(member: MemberTensors) -> torch.Tensor:
    """(P,) a member's effective parameters in architecture order (the zoo's `params` column)."""
    return member.arch.flatten({n: p[None] for n, p in member.params.items()})[0]  # (1, P) -> (P,)


def aligned_bank(members: Sequence[MemberTensors], reference: MemberTensors) -> torch.Tensor:
    """(M, P) the members' parameters, each weight-matched to `reference` first (hidden neurons permuted
    to best match it: without that, every other run looks far from it)."""
    return torch.stack([flat(match_order(m, reference.params)[0]) for m in members])


def nearest(x: MemberTensors, bank: torch.Tensor) -> tuple[float, int]:
    """L2 distance from `x` to the nearest row of `bank` (M, P), and that row."""
    d = torch.linalg.vector_norm(bank - flat(x)[None], dim=1)  # (M,)
    k = int(d.argmin())
    return float(d[k]), k


def distance(a: MemberTensors, b: MemberTensors) -> float:
    """L2 distance between two members' parameters (no alignment: an update keeps its start's order)."""
    return float(torch.linalg.vector_norm(flat(a) - flat(b)))
