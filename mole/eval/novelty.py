"""novelty: cosine similarity of each member to its nearest training member, after permutation alignment."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mole.errors import ConfigError
from mole.eval.base import ALIGNS, EvalSet, Evaluator, Metric, by_architecture, unit_rows


def nearest_cosine(s: EvalSet, align: str) -> np.ndarray:
    """(N,) cosine of each member to its nearest reference member of the same architecture
    (nan where the reference has none)."""
    members, reference = s.tensors("members"), s.tensors("reference")
    vecs, ref_vecs = s.vectors("members", align), s.vectors("reference", align)
    ref_groups = by_architecture(reference)
    best = np.full(len(members), math.nan)
    for sig, idx in by_architecture(members).items():
        ref_idx = ref_groups.get(sig)
        if not ref_idx:
            continue
        a = unit_rows([vecs[i] for i in idx])  # (n, P)
        b = unit_rows([ref_vecs[j] for j in ref_idx])  # (m, P)
        best[idx] = np.clip(a @ b.T, -1.0, 1.0).max(axis=1)  # (n, m) -> (n,)
    return best


@dataclass
class Novelty(Evaluator):
    """How far members are from the training zoo: nn_cosine_median / _mean / _max, the cosine
    similarity of each member's effective flat params to its nearest reference member, and
    frac_novel, the share of members whose nearest cosine is below `threshold`.

    Hidden neurons can be reordered without changing a network, so both sides are aligned first.
    align="match" (default) matches every member to one target per architecture (the MergeMany mean
    of the reference members, mole.tokenizer.canonical.match_reference) by weight matching: a
    permuted copy of a training member then has cosine 1 (it is no novelty), and neurons doing the
    same job line up across different members too, so the nearest cosine is a fair distance.
    align="canonical" sorts each member's neurons on its own (aligns exact permutations only; a
    noisy copy with near-equal sort keys may align partly, a lower bound); "none" compares raw order.
    Members are compared only with reference members of the same architecture and width; members
    with none are left out of the statistics (and it is an error when no member has any). Every
    reference row counts, snapshots included: pass only final rows (`load_rows`) to compare with
    finished networks, which is also cheaper.

    Args:
        align: "match", "canonical" or "none" (raw parameter order).
        threshold: nearest cosine below which a member counts as novel.
    """

    name: ClassVar[str] = "novelty"
    align: str = "match"
    threshold: float = 0.98

    def check(self) -> None:
        self.check_choice("align", ALIGNS)
        self.check_number("threshold", -1.0, 1.0)

    def __call__(self, s: EvalSet) -> Iterator[Metric]:
        self.require(s, "reference")
        cos = nearest_cosine(s, self.align)
        cos = cos[~np.isnan(cos)]
        if cos.size == 0:
            raise ConfigError(
                f"eval.{self.name}", f"no reference member shares an architecture with set {s.label!r}"
            )
        yield "nn_cosine_median", float(np.median(cos))
        yield "nn_cosine_mean", float(cos.mean())
        yield "nn_cosine_max", float(cos.max())
        yield "frac_novel", float((cos < self.threshold).mean())
