"""Evaluators (EVALUATORS): one file each, one interface (mole.eval.base.Evaluator).

Each evaluator reads an EvalSet (zoo rows being evaluated, optionally the training members and the
task) and yields (metric, value) pairs; `evaluate` runs several and returns flat result rows.
Around them: benchmarks.py (one function per benchmark figure B2-B8), memorization.py (B4: Zeng et
al.'s baselines and frontier), report.py (the report renderer, one function per section), inputs.py
(zoo folders sorted into report roles) and run.py (`evaluate_zoos`, what `mole eval` runs, and
`write_report`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mole.errors import ConfigError
from mole.eval.accuracy import Accuracy
from mole.eval.alignment import PromptAlignment
from mole.eval.base import EvalSet, Evaluator, load_rows, prompt_of
from mole.eval.constraints import Constraints
from mole.eval.diversity import Diversity
from mole.eval.mispredictions import MispredictionIoU
from mole.eval.novelty import Novelty
from mole.eval.timing import TimeToNetwork
from mole.registry import Registry

EVALUATORS: Registry[type[Evaluator]] = Registry("evaluator")
EVALUATORS.register("accuracy")(Accuracy)
EVALUATORS.register("prompt_alignment")(PromptAlignment)
EVALUATORS.register("novelty")(Novelty)
EVALUATORS.register("diversity")(Diversity)
EVALUATORS.register("misprediction_iou")(MispredictionIoU)
EVALUATORS.register("constraints")(Constraints)
EVALUATORS.register("time_to_network")(TimeToNetwork)


def build_evaluator(name: str, options: Mapping[str, Any] | None = None) -> Evaluator:
    """Instantiate evaluator `name`; an unknown name or option, or a bad value, raises a ConfigError
    naming the field (`eval.<name>.<option>`)."""
    cls = EVALUATORS.get(name, field="eval")
    options = dict(options or {})
    for key in options:
        if key not in cls.options():
            valid = ", ".join(cls.options()) or "none"
            raise ConfigError(f"eval.{name}.{key}", f"unknown option; valid: {valid}")
    return cls(**options)


def evaluate(
    s: EvalSet, evaluators: Mapping[str, Mapping[str, Any] | None] | Sequence[str | Evaluator]
) -> list[dict]:
    """Run evaluators on one eval set.

    Args:
        s: what to evaluate.
        evaluators: {name: options (or None)}, or a list of names (default options) and built evaluators.

    Returns:
        One row per metric: {"set": s.label, "evaluator": name, "metric": ..., "value": float}.
    """
    if isinstance(evaluators, Mapping):
        built = [build_evaluator(name, opts) for name, opts in evaluators.items()]
    else:
        built = [e if isinstance(e, Evaluator) else build_evaluator(e) for e in evaluators]
    return [
        {"set": s.label, "evaluator": e.name, "metric": metric, "value": float(value)}
        for e in built
        for metric, value in e(s)
    ]


__all__ = ["EVALUATORS", "EvalSet", "Evaluator", "build_evaluator", "evaluate", "load_rows", "prompt_of"]
