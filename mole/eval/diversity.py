"""diversity: how different the evaluated members are from each other (weights and predictions)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mole.eval.base import ALIGNS, EvalSet, Evaluator, Metric, by_architecture, unit_rows


def pairwise_cosines(s: EvalSet, align: str) -> np.ndarray:
    """Cosines of every pair i < j of members sharing an architecture, concatenated (pairs,)."""
    vecs = s.vectors("members", align)
    out = []
    for idx in by_architecture(s.tensors()).values():
        a = unit_rows([vecs[i] for i in idx])  # (n, P)
        cos = np.clip(a @ a.T, -1.0, 1.0)  # (n, n)
        out.append(cos[np.triu_indices(len(idx), k=1)])
    return np.concatenate(out) if out else np.zeros(0)


def pairwise_disagreement(predictions: np.ndarray) -> np.ndarray:
    """Share of test examples two members classify differently, for every pair i < j (pairs,).

    Args:
        predictions: (N, n_test) predicted classes.
    """
    n, n_test = predictions.shape
    agree = np.zeros((n, n), dtype=np.float64)  # (N, N) examples on which i and j predict the same
    for c in np.unique(predictions):
        hit = (predictions == c).astype(np.float32)  # (N, n_test), one class at a time to bound memory
        agree += hit @ hit.T
    agree /= max(n_test, 1)
    return 1.0 - agree[np.triu_indices(n, k=1)]


@dataclass
class Diversity(Evaluator):
    """Spread among the evaluated members: pairwise_cosine_mean / _min / _max over every pair of
    members of the same architecture (effective flat params, aligned as in `novelty`: a permuted copy
    counts as the same network), and, when `EvalSet.data` is given, pairwise_disagreement_mean: the
    share of test examples on which two members predict different classes, averaged over all pairs.
    Values are nan when there is no pair.

    Args:
        align: "match" (weight matching to the members' MergeMany mean), "canonical" or "none".
    """

    name: ClassVar[str] = "diversity"
    align: str = "match"

    def check(self) -> None:
        self.check_choice("align", ALIGNS)

    def __call__(self, s: EvalSet) -> Iterator[Metric]:
        cos = pairwise_cosines(s, self.align)
        yield "pairwise_cosine_mean", float(cos.mean()) if cos.size else math.nan
        yield "pairwise_cosine_min", float(cos.min()) if cos.size else math.nan
        yield "pairwise_cosine_max", float(cos.max()) if cos.size else math.nan
        if s.data is not None:
            dis = pairwise_disagreement(s.outputs().predictions)
            yield "pairwise_disagreement_mean", float(dis.mean()) if dis.size else math.nan
