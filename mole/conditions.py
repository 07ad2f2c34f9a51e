"""The one table of conditions a generator can be prompted with: name, kind, zoo column, null value.

The data module reads each training row's conditions from it, the conditioning code builds the
models' condition specs from it, and the evaluators compare what a member was prompted with to what
it achieved through it. To add a condition: one row here (and the zoo column it reads).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

KINDS = ("continuous", "categorical")
FLOAT32_BITS = 32  # the `bits` of a float (unquantized) member
FULL_RANK = 0  # the `rank` of a member without factors
# The `bits` condition of a ternary member: the information its codes {-1, 0, 1} hold. The zoo's
# `bits` column stores 2 (the width of the stored codes); as a condition 2 would make ternary and the
# symmetric 2-bit grid one prompt, though their weights differ (thresholds at 0.7 mean |w| and at
# half the rounding-error-chosen scale), and a model told "2 bits" could learn neither well.
TERNARY_BITS = math.log2(3)


@dataclass(frozen=True)
class Condition:
    """One condition.

    Args:
        name: what prompts and model configs call it.
        kind: "continuous" (a number, embedded with sin/cos features) or "categorical" (an id into
            the zoo's sorted vocabulary of the column).
        column: the zoo column (mole.zoo.store.SCHEMA) the value is read from.
        null: the value a null in the column stands for (sparsity 0: dense; bits 32: float; rank
            0: full); None: a null stays missing.
        integer: the column holds integers (items carry them as int64).
        start: read from the starting snapshot of a G.pt pair (data mode "pairs" only).
        better: which way the condition improves ("higher" accuracy, "lower" loss), the side a
            prompt may go past the trained range with the sampler's opt-in `extrapolate`; None: never.
        bound: the value no member can pass on that side (accuracy 1, loss 0).
    """

    name: str
    kind: str
    column: str
    null: float | int | None = None
    integer: bool = False
    start: bool = False
    better: str | None = None
    bound: float | None = None

    def value(self, row: dict):
        """The condition's value in a zoo row (the column, its null filled in; a ternary member's
        bits are TERNARY_BITS, read from its variant_config)."""
        value = row[self.column]
        if self.name == "bits" and is_ternary(row.get("variant_config")):
            return TERNARY_BITS
        return self.null if value is None else value


def is_ternary(variant_config: str | dict | None) -> bool:
    """Whether a zoo row's variant_config (JSON text or dict) is the ternary quantization scheme."""
    if not variant_config:
        return False
    config = json.loads(variant_config) if isinstance(variant_config, str) else variant_config
    return config.get("scheme") == "ternary"


# The order is the order of the models' condition specs (and of their dropout draws): keep it.
CONDITIONS: tuple[Condition, ...] = (
    Condition("test_acc", "continuous", "test_acc", better="higher", bound=1.0),
    Condition("test_loss", "continuous", "test_loss", better="lower", bound=0.0),
    Condition("sparsity", "continuous", "sparsity", null=0.0),
    Condition("bits", "continuous", "bits", null=FLOAT32_BITS),  # float: ternary is TERNARY_BITS
    Condition("rank", "continuous", "rank", null=FULL_RANK, integer=True),
    Condition("start_test_loss", "continuous", "test_loss", start=True),
    Condition("start_test_acc", "continuous", "test_acc", start=True),
    Condition("variant", "categorical", "variant"),
    Condition("architecture", "categorical", "architecture"),
    Condition("task", "categorical", "task"),
)
BY_NAME = {c.name: c for c in CONDITIONS}
CATEGORICAL = tuple(c.name for c in CONDITIONS if c.kind == "categorical")
# The levels a member is prompted with and achieves (its own zoo column of the same name): name -> null.
LEVELS: dict[str, float | int | None] = {
    c.name: c.null for c in CONDITIONS if c.kind == "continuous" and not c.start
}


def conditions(pairs: bool = False) -> list[Condition]:
    """The conditions of one training item: every row's, plus the starting snapshot's for `pairs`."""
    return [c for c in CONDITIONS if pairs or not c.start]
