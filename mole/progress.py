"""Progress of a long stage: a rich bar on a terminal, one summary line otherwise (logs, CI, pipes).

Stages report through a plain callback `update(done, total)`, so the code that does the work never
imports rich; the command that runs it decides how progress is shown.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

Update = Callable[[int, "int | None"], None]


def on_terminal() -> bool:
    """Whether stdout is an interactive terminal (rich's test: a TTY, and not TERM=dumb)."""
    return Console(file=sys.stdout).is_terminal


class StageProgress:
    """Counts one stage's steps: a bar while it runs on a terminal, else one line when it ends.

    Use as `with StageProgress("sampling dense", unit="steps") as update: work(on_step=update)`;
    `update(done, total)` may be called any number of times (or never: the bar then only shows time);
    a disabled one gives None instead, which the work's `on_step=None` default takes as "no progress".

    Args:
        label: what the stage does, e.g. "rss trials".
        unit: what is counted, for the summary line, e.g. "trials".
        enabled: False shows nothing at all (the caller prints its own lines, or was asked to be quiet).
        summary: print "label: done/total unit, S s" when it ends (False: nothing, e.g. inside the
            quickstart, whose stage lines already say it).
    """

    def __init__(self, label: str, unit: str = "steps", enabled: bool = True, summary: bool = True):
        self.label, self.unit, self.enabled, self.summary = label, unit, enabled, summary
        self.done, self.total, self.bar, self.task, self.start = 0, None, None, None, 0.0

    def __enter__(self) -> Update | None:
        self.start = time.perf_counter()
        if self.enabled and on_terminal():
            self.bar = Progress(
                TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
            )
            self.bar.__enter__()
            self.task = self.bar.add_task(self.label, total=None)
        return self.update if self.enabled else None  # None: the work skips its progress calls

    def update(self, done: int, total: int | None = None) -> None:
        self.done, self.total = done, total if total is not None else self.total
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=self.total)

    def __exit__(self, kind, *rest) -> bool:
        if self.bar is not None:
            self.bar.__exit__(kind, *rest)
        if kind is None and self.enabled and self.summary:
            count = f"{self.done}/{self.total} {self.unit}, " if self.total else ""
            print(f"{self.label}: {count}{time.perf_counter() - self.start:.1f} s")
        return False
