"""misprediction_iou: behavioural novelty and diversity, as Zeng et al. 2025 measure them.

Two networks behave alike when they get the same test examples wrong. The overlap of their sets of
mispredicted examples, as intersection over union (IoU), reads that likeness without any weight
alignment: a permuted copy of a member mispredicts exactly what the member does (IoU 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mole.errors import ConfigError
from mole.eval.base import EvalSet, Evaluator, Metric, summary


def wrong_sets(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N, n_test) bool: which test examples each net gets wrong.

    Args:
        predictions: (N, n_test) predicted classes.
        labels: (n_test,) true classes.
    """
    return np.asarray(predictions) != np.asarray(labels)[None, :]


def iou_matrix(a: np.ndarray, b: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(Na, Nb) IoU of every row set of `a` with every row set of `b`.

    Two empty sets (two nets with no test error) have IoU 1: they behave alike on the test set
    (Zeng et al.'s 0 / (0 + 1e-8) would call a copy of a perfect member novel).

    Args:
        a: (Na, n_test) bool, the examples each net of one side gets wrong.
        b: (Nb, n_test) bool, the same for the other side.
        weights: (n_test,) how often each example counts (a bootstrap resample's counts), or None (once).
    """
    # Counts are whole numbers far below 2**24, so float32 sums them exactly (and twice as fast).
    w = np.ones(a.shape[1], dtype=np.float32) if weights is None else np.asarray(weights, dtype=np.float32)
    fa, fb = a.astype(np.float32), b.astype(np.float32)
    inter = ((fa * w) @ fb.T).astype(np.float64)  # (Na, Nb) weighted count of examples both get wrong
    union = (fa @ w).astype(np.float64)[:, None] + (fb @ w).astype(np.float64)[None, :] - inter  # (Na, Nb)
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 1.0)


def max_iou(
    wrong: np.ndarray,
    train_wrong: np.ndarray,
    exclude: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each net's largest misprediction IoU with any training member, and which member that is.

    Args:
        wrong: (N, n_test) bool, the evaluated nets' mispredictions.
        train_wrong: (M, n_test) bool, the training members'.
        exclude: (N, M) bool, pairs left out (a member against itself, for leave-one-out), or None.
        weights: (n_test,) example counts (see `iou_matrix`).

    Returns:
        (max IoU (N,), index of the nearest member (N,)); nan and -1 where every member is excluded.
    """
    iou = iou_matrix(wrong, train_wrong, weights)  # (N, M)
    if exclude is not None:
        iou = np.where(exclude, -np.inf, iou)
    if iou.shape[1] == 0:
        return np.full(len(wrong), math.nan), np.full(len(wrong), -1)
    nearest = iou.argmax(axis=1)
    best = iou[np.arange(len(wrong)), nearest]
    none = np.isneginf(best)
    return np.where(none, math.nan, best), np.where(none, -1, nearest)


def pairwise_iou(wrong: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Misprediction IoU of every pair i < j of nets (pairs,): their behavioural diversity."""
    iou = iou_matrix(wrong, wrong, weights)  # (N, N)
    return iou[np.triu_indices(len(wrong), k=1)]


def same_member(members: Sequence[dict], reference: Sequence[dict]) -> np.ndarray:
    """(N, M) bool: which reference rows are the evaluated row's own member (same member_id)."""
    ids = np.asarray([r.get("member_id") for r in reference], dtype=object)
    return (
        np.stack([ids == r.get("member_id") for r in members]) if members else np.zeros((0, len(ids)), bool)
    )


@dataclass
class MispredictionIoU(Evaluator):
    """Behavioural novelty and diversity (Zeng et al. 2025, "Generative Modeling of Weights:
    Generalization or Memorization?"), on the test split of `EvalSet.data`.

    Novelty (with a reference): each member's largest IoU between its set of mispredicted test examples
    and any reference member's; max_iou_median / _mean / _min / _max over the members (lower is more
    novel), and nearest_members, the share of reference members that are some member's nearest (how
    much of the zoo the set draws on). Pass only final rows as the reference (`load_rows`): Zeng et al.
    compare with each training run's last checkpoint. Diversity (always): pairwise_iou_median / _mean,
    the misprediction IoU of every pair of members (lower is more diverse); nan with fewer than two.

    Args:
        leave_one_out: leave out the reference rows of a member's own member_id, to score SGD members
            against each *other* member (the figure generated nets are compared with).
    """

    name: ClassVar[str] = "misprediction_iou"
    leave_one_out: bool = False

    def check(self) -> None:
        self.check_flag("leave_one_out")

    def __call__(self, s: EvalSet) -> Iterator[Metric]:
        self.require(s, "data")
        labels = s.data.split("test")[1].cpu().numpy()
        wrong = wrong_sets(s.outputs().predictions, labels)
        if s.reference is not None:
            ref = EvalSet(s.reference, data=s.data, label=f"{s.label}/reference")
            train = wrong_sets(ref.outputs().predictions, labels)
            exclude = same_member(s.members, s.reference) if self.leave_one_out else None
            best, nearest = max_iou(wrong, train, exclude)
            if np.isnan(best).all():
                raise ConfigError(
                    f"eval.{self.name}", f"no reference member left to compare set {s.label!r} with"
                )
            stats = summary(best[~np.isnan(best)])
            for stat in ("median", "mean", "min", "max"):
                yield f"max_iou_{stat}", stats[stat]
            yield "nearest_members", len(set(nearest[nearest >= 0].tolist())) / len(s.reference)
        pairs = pairwise_iou(wrong)
        yield "pairwise_iou_median", float(np.median(pairs)) if pairs.size else math.nan
        yield "pairwise_iou_mean", float(pairs.mean()) if pairs.size else math.nan
