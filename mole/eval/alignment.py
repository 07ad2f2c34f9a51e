"""prompt_alignment: how closely members achieve what they were prompted for (MAE, Spearman)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.stats import spearmanr

from mole.errors import ConfigError
from mole.eval.base import CONDITIONS, EvalSet, Evaluator, Metric, achieved, numeric_level, prompt_of


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation; nan when it is undefined (fewer than 2 pairs, or a constant side)."""
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(spearmanr(x, y).statistic)


@dataclass
class PromptAlignment(Evaluator):
    """Prompted vs achieved, per condition present in the prompts: `<condition>_mae` (mean absolute
    error) and `<condition>_spearman` (rank correlation), over the members that prompted it.

    Conditions are test_acc, test_loss, sparsity, bits and rank; the achieved value is the row's
    column of the same name (null sparsity / bits / rank read as 0 / 32 / 0, "ternary" bits as 2).
    Spearman is undefined when every prompt is equal (a single prompted level, the common case for a
    constraint like bits) or every achieved value is equal: it is then nan, while the MAE still says
    how close the members came. A condition no member prompted yields nothing.

    Args:
        conditions: the conditions to report (default: every one present).
    """

    name: ClassVar[str] = "prompt_alignment"
    conditions: list[str] | None = None

    def check(self) -> None:
        if self.conditions is None:
            return
        if isinstance(self.conditions, str) or not all(c in CONDITIONS for c in self.conditions):
            raise ConfigError(
                self.field("conditions"), f"got {self.conditions!r}; valid: a list of {', '.join(CONDITIONS)}"
            )

    def __call__(self, s: EvalSet) -> Iterator[Metric]:
        prompts = [prompt_of(r) for r in s.members]
        for cond in self.conditions or CONDITIONS:
            pairs = []
            for row, prompt in zip(s.members, prompts):
                if prompt.get(cond) is None:
                    continue
                want, got = numeric_level(cond, prompt[cond]), achieved(row, cond)
                if want is not None and got is not None:
                    pairs.append((want, got))
            if not pairs:
                continue
            want, got = np.asarray(pairs, dtype=np.float64).T  # (n,), (n,)
            yield f"{cond}_mae", float(np.abs(want - got).mean())
            yield f"{cond}_spearman", spearman(want, got)
