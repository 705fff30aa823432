"""Loggers that write one file alone: a run's train.log, a report's wandb.log."""

from __future__ import annotations

import logging
from pathlib import Path

FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] %(message)s"  # conf/train.yaml's job log


def file_logger(name: str, path: Path) -> logging.Logger:
    """A logger that appends to `path` alone: made directly, not by getLogger, so it belongs to
    its run and goes with it, and its lines never reach the root logger's handlers (the
    terminal)."""
    logger = logging.Logger(name, logging.INFO)
    handler = logging.FileHandler(path, mode="a", delay=True)
    handler.setFormatter(logging.Formatter(FORMAT))
    logger.addHandler(handler)
    return logger
