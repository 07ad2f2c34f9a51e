"""accuracy: test accuracy and loss of the members (mean, std, min, max, median), optionally by level."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from mole.errors import ConfigError
from mole.eval.base import EvalSet, Evaluator, Metric, prompt_of, summary

METRICS = ("test_acc", "test_loss")


def level_label(value: Any) -> str:
    """How a group's level appears in metric names: 0.5, 4, ternary, dense, none."""
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def _sort_key(value: Any) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1 if value is not None else 2, 0.0, str(value))


@dataclass
class Accuracy(Evaluator):
    """Test accuracy and loss: `<metric>_<stat>` for stat in mean, std (population), min, max, median,
    and `n` (members counted).

    Values are the rows' stored test_acc / test_loss columns (members with a null are left out), or
    recomputed on the test split of `EvalSet.data` with `recompute`. A per-level breakdown belongs to
    the report; `by` groups here too, adding `<metric>_<stat>@<by>=<level>` and `n@<by>=<level>`.

    Args:
        recompute: recompute the metrics on `EvalSet.data` (required then) instead of reading columns.
        by: group members by this key: the prompted level when the prompt has it (what was asked,
            e.g. sparsity 0.5), else the row's column of that name (e.g. "variant").
    """

    name: ClassVar[str] = "accuracy"
    recompute: bool = False
    by: str | None = None

    def check(self) -> None:
        self.check_flag("recompute")
        if self.by is not None and (not isinstance(self.by, str) or not self.by):
            raise ConfigError(self.field("by"), f"must be a key name (e.g. 'sparsity'), got {self.by!r}")

    def __call__(self, s: EvalSet) -> Iterator[Metric]:
        if self.recompute:
            self.require(s, "data")
            out = s.outputs()
            values = {"test_acc": list(out.acc), "test_loss": list(out.loss)}
        else:
            values = {k: [r.get(k) for r in s.members] for k in METRICS}
        yield from self.stats(values, range(len(s.members)), "")
        if self.by is None:
            return
        groups: dict[Any, list[int]] = {}
        for i, row in enumerate(s.members):
            prompt = prompt_of(row)
            groups.setdefault(prompt[self.by] if self.by in prompt else row.get(self.by), []).append(i)
        for level in sorted(groups, key=_sort_key):
            yield from self.stats(values, groups[level], f"@{self.by}={level_label(level)}")

    def stats(self, values: dict[str, list], idx, suffix: str) -> Iterator[Metric]:
        idx = list(idx)
        for metric in METRICS:
            v = [float(values[metric][i]) for i in idx if values[metric][i] is not None]
            for stat, value in summary([x for x in v if not math.isnan(x)]).items():
                yield f"{metric}_{stat}{suffix}", value
        yield f"n{suffix}", float(len(idx))
