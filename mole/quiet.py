"""Library chatter goes to a run's log file, not the console; real errors still reach the console.

Chatter is what the libraries print that a user of mole cannot act on: Lightning's "GPU available" /
"TPU available" lines, its tips and "Seed set to" lines, W&B's banners, warnings and run summaries,
Hugging Face datasets' "Generating train split" bars (switched off), and deprecation warnings raised
inside the libraries. Records at ERROR and above still go to stderr as well; warnings raised by mole's
own code, or by a library that are not known chatter, are shown as usual and also logged.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

MOLE = str(Path(__file__).resolve().parent)
# Loggers with a console handler of their own (Lightning attaches one to each of its packages, datasets
# to its own) and the root logger, which catches libraries that log without one (W&B's "Images sizes
# do not match"). W&B's own logger writes only to its run's debug.log and is left alone.
LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric", "datasets", "")
# Warnings known to be chatter whatever their category: nothing to act on in a mole run.
KNOWN_WARNINGS = (
    re.compile(r"smaller than the logging interval"),  # tiny epochs: Lightning's log_every_n_steps hint
    re.compile(r"isinstance\(treespec, LeafSpec\)"),  # Lightning's own use of a torch deprecation
)
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def is_chatter(message: Warning | str, category: type[Warning], filename: str) -> bool:
    """A known warning, or a deprecation raised outside mole's own files."""
    text = str(message)
    if any(p.search(text) for p in KNOWN_WARNINGS):
        return True
    return issubclass(category, DEPRECATIONS) and not str(Path(filename).resolve()).startswith(MOLE)


class WandbToLog:
    """sys.stderr for the duration: W&B's console lines ("wandb: ...") go to a logger, the rest through.

    W&B writes every banner, warning and run summary with one write per message, each line prefixed
    "wandb:" (styled on a terminal), to whatever sys.stderr is at that moment.
    """

    def __init__(self, stream: TextIO, logger: logging.Logger):
        self.stream, self.logger = stream, logger

    def write(self, text: str) -> int:
        plain = ANSI.sub("", text)
        if plain.startswith("wandb:"):
            self.logger.info(plain.rstrip())
            return len(text)
        return self.stream.write(text)

    def __getattr__(self, name: str):  # isatty, fileno, flush, encoding ...: the real stream's
        return getattr(self.stream, name)


_routing: list[Path] = []  # the log files of the chatter_to blocks running now, outermost first


def routed_to() -> Path | None:
    """The log file chatter goes to now (the outermost chatter_to block's), or None."""
    return _routing[0] if _routing else None


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


@contextmanager
def chatter_to(path: str | Path) -> Iterator[Path]:
    """Route library chatter to the log file `path` (appended to) while the block runs.

    Args:
        path: the log file; its folder must exist.
    """
    path = Path(path)
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setLevel(logging.INFO)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    errors = logging.StreamHandler(sys.stderr)
    errors.setLevel(logging.ERROR)
    saved = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers = [h for h in logger.handlers if not _is_console(h)] + [to_file, errors]
        logger.propagate = False
    chatter = logging.getLogger("mole.chatter")  # warnings (chatter or not) and W&B's lines
    saved.append((chatter, chatter.handlers[:], chatter.propagate))
    chatter.handlers, chatter.propagate = [to_file], False
    chatter.setLevel(logging.INFO)
    show, stderr = warnings.showwarning, sys.stderr

    def showwarning(message, category, filename, lineno, file=None, line=None):
        chatter.warning(warnings.formatwarning(message, category, filename, lineno, line).strip())
        if not is_chatter(message, category, filename):
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
    sys.stderr = WandbToLog(stderr, chatter)
    # datasets reads its variable when imported, so an imported one is told directly; a variable the
    # user set is left as it is.
    bars_env = os.environ.get("HF_DATASETS_DISABLE_PROGRESS_BARS")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    hf = sys.modules.get("datasets")
    enable_bars = hf is not None and hf.is_progress_bar_enabled()
    if enable_bars:
        hf.disable_progress_bars()
    _routing.append(path)
    try:
        yield path
    finally:
        _routing.pop()
        sys.stderr, warnings.showwarning = stderr, show
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate
        to_file.close()
        if bars_env is None:
            os.environ.pop("HF_DATASETS_DISABLE_PROGRESS_BARS", None)
        if enable_bars:
            hf.enable_progress_bars()
