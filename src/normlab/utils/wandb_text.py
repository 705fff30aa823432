"""W&B's terminal text of a run goes to that run's train.log; the terminal keeps one line.

W&B prints a dozen or more lines per run (where it saves, the history's sparklines, the
summary, how to sync): in a sweep, that buried each cell's line. W&B's silent mode hands its text
to a fallback logger instead of stderr (`wandb.termsetup`); normlab gives it one whose handler
appends each line to the train.log of the run being started or finished in this thread (a
context variable: a stack opens its members' runs in threads), and prints a line that no run
claims (a W&B warning outside a start or finish) to stderr, as W&B would.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator

_CURRENT: contextvars.ContextVar[logging.Logger | None] = contextvars.ContextVar(
    "normlab_wandb_text", default=None
)


class _ToRunLog(logging.Handler):
    """Each W&B line to the current run's log, else to stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        target = _CURRENT.get()
        if target is not None:
            target.handle(record)
        else:
            sys.stderr.write(record.getMessage() + "\n")


_TEXT = logging.Logger("wandb.terminal", logging.INFO)  # W&B's text, never the root logger's
_TEXT.addHandler(_ToRunLog())


def route_wandb_text() -> None:
    """Send W&B's terminal text through normlab's handler (idempotent; W&B loads its own
    terminal settings once, with its first settings: loaded here first, so they stay ours)."""
    import wandb

    wandb.setup()
    wandb.termsetup(wandb.Settings(silent=True), _TEXT)


@contextlib.contextmanager
def wandb_text_to(target: logging.Logger | None) -> Iterator[None]:
    """W&B's lines printed in this thread within this block go to `target` (None: stderr)."""
    token = _CURRENT.set(target)
    try:
        yield
    finally:
        _CURRENT.reset(token)
