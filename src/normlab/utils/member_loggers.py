"""The one Lightning logger of a run: each member's metrics reach that member's own loggers.

A metric value is either one per member (a sequence or a 1-D tensor of length M: member m's
entry goes to member m's loggers; None skips that member) or one for all (a number: it joins
every member's row, like Lightning's `epoch` or a callback's scalar). So the module logs
`train/loss` once, as an `[M]` tensor, and LearningRateMonitor's `lr-...` (the optimizer's `[M]`
learning rates) reaches each member as its own rate. Each member folder gets the metrics.csv
and W&B run its solo run would write.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from pytorch_lightning.loggers import Logger, WandbLogger

SHORT_EPOCH_WARNING = r"The number of training batches \(\d+\) is smaller than the logging interval"


def _per_member(value: Any, count: int) -> list | None:
    """`value` as a list of M entries when it holds one per member, else None."""
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.dim() == 1 and len(value) == count else None
    if isinstance(value, (list, tuple)) and len(value) == count:
        return list(value)
    return None


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value


class MemberLoggers(Logger):
    """Routes each member's entry of a metric to that member's loggers (see the module doc);
    values that are not numbers (W&B histograms) go to W&B loggers only."""

    def __init__(self, member_loggers: Sequence[Sequence[Logger]]):
        super().__init__()
        # Lightning warns when an epoch has fewer batches than log_every_n_steps, as its own
        # self.log would then log nothing in an epoch; normlab's module logs every
        # log_every_n_steps optimizer steps across epochs, so a short epoch loses no row
        warnings.filterwarnings("ignore", message=SHORT_EPOCH_WARNING)
        self.member_loggers = [list(loggers) for loggers in member_loggers]
        self._unsaved: set[int] = set()

    @property
    def name(self) -> str:
        return "members"

    @property
    def version(self) -> str:
        return ""

    @property
    def has_wandb(self) -> bool:
        """Whether any member logs to W&B (the instruments then add histograms)."""
        return any(isinstance(one, WandbLogger) for ls in self.member_loggers for one in ls)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        for loggers in self.member_loggers:
            for logger in loggers:
                logger.log_hyperparams(params, *args, **kwargs)

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        count = len(self.member_loggers)
        shared: dict[str, Any] = {}
        columns: dict[str, list] = {}
        for key, value in metrics.items():
            entries = _per_member(value, count)
            if entries is None:
                shared[key] = _scalar(value)
            else:
                columns[key] = entries
        for member, loggers in enumerate(self.member_loggers):
            own = {key: entries[member] for key, entries in columns.items()}
            own = {key: value for key, value in own.items() if value is not None}
            if not own and not set(shared) - {"epoch"}:
                continue  # nothing of this member's but Lightning's `epoch`
            row = {**own, **shared}
            numbers = {k: v for k, v in row.items() if isinstance(v, (int, float, bool))}
            for logger in loggers:
                wandb = isinstance(logger, WandbLogger)
                if wandb or set(numbers) - {"epoch"}:  # histograms alone: W&B only
                    logger.log_metrics(row if wandb else numbers, step)
            self._unsaved.add(member)

    def save(self) -> None:
        # Lightning calls this after every batch: only members with new rows need a write
        for member in sorted(self._unsaved):
            for logger in self.member_loggers[member]:
                logger.save()
        self._unsaved.clear()

    def finalize(self, status: str) -> None:
        for loggers in self.member_loggers:
            for logger in loggers:
                logger.finalize(status)
