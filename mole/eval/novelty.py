"""novelty: cosine similarity of each member to its nearest training member, after permutation alignment."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mole.errors import ConfigError
from mole.eval.base import ALIGNS, EvalSet, Evaluator, Metric, by_architecture, flat_params, unit_rows


def cosines(s: EvalSet, align: str) -> list[tuple[list[int], list[int], np.ndarray]]:
    """Per architecture: (member indices, reference indices, their (n, m) cosine matrix)."""
    members, reference = s.tensors("members"), s.tensors("reference")
    vecs, ref_vecs = s.vectors("members", align), s.vectors("reference", align)
    ref_groups = by_architecture(reference)
    out = []
    for sig, idx in by_architecture(members).items():
        ref_idx = ref_groups.get(sig)
        if ref_idx:
            a = unit_rows([vecs[i] for i in idx])  # (n, P)
            b = unit_rows([ref_vecs[j] for j in ref_idx])  # (m, P)
            out.append((idx, ref_idx, np.clip(a @ b.T, -1.0, 1.0)))
    return out


def nearest_cosine(s: EvalSet, align: str) -> np.ndarray:
    """(N,) cosine of each member to its nearest reference member of the same architecture
    (nan where the reference has none)."""
    best = np.full(len(s.members), math.nan)
    for idx, _, cos in cosines(s, align):
        best[idx] = cos.max(axis=1)  # (n, m) -> (n,)
    return best


def matched_cosine(s: EvalSet, k: int) -> np.ndarray:
    """(N,) cosine of each member to its nearest reference member, the member weight-matched to each
    candidate on its own (mole.tokenizer.canonical.match_order), not to one shared target.

    Matching to a shared target under-reads copies (a member plus noise lines up with the target,
    not with the member it came from). Only the `k` nearest members by the shared-target cosine are
    matched, so the cost is k matchings per member; the nearest one pair by pair is almost always
    among them. nan where the reference has no member of the same architecture.
    """
    members, reference = s.tensors("members"), s.tensors("reference")
    best = np.full(len(members), math.nan)
    for idx, ref_idx, cos in cosines(s, "match"):
        for row, i in enumerate(idx):
            scores = []
            for col in np.argsort(-cos[row], kind="stable")[:k]:
                target = reference[ref_idx[col]]
                a = flat_params(members[i], "match", target.params)
                b = flat_params(target, "none")
                scores.append(float(unit_rows([a, b]).prod(axis=0).sum()))
            best[i] = min(max(scores), 1.0)
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

    nn_cosine_matched_median / _mean / _max weight-match each member to each candidate reference
    member pair by pair instead (`matched_cosine`), the `matched_k` nearest by the shared-target
    cosine: a member plus noise then reads as the copy it is (the shared target under-reads it).

    Args:
        align: "match", "canonical" or "none" (raw parameter order).
        threshold: nearest cosine below which a member counts as novel.
        matched_k: reference members matched pair by pair to each member (0: no matched figures).
    """

    name: ClassVar[str] = "novelty"
    align: str = "match"
    threshold: float = 0.98
    matched_k: int = 4

    def check(self) -> None:
        self.check_choice("align", ALIGNS)
        self.check_number("threshold", -1.0, 1.0)
        if not isinstance(self.matched_k, int) or isinstance(self.matched_k, bool) or self.matched_k < 0:
            raise ConfigError(self.field("matched_k"), f"must be an integer >= 0, got {self.matched_k!r}")

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
        if self.matched_k:
            matched = matched_cosine(s, self.matched_k)
            matched = matched[~np.isnan(matched)]
            yield "nn_cosine_matched_median", float(np.median(matched))
            yield "nn_cosine_matched_mean", float(matched.mean())
            yield "nn_cosine_matched_max", float(matched.max())
