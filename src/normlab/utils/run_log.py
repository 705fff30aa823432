"""A run folder's train.log: the run's own lines in text, one Lightning logger per member.

Each member's RunLog appends to <run>/train.log: where the run's shared lines are (a stack
member: its stack's log, which holds the worker's start-up, warnings and errors), W&B's terminal
text of the member's run (normlab.utils.wandb_text), and a line per validation and test with
that member's metrics. A Hydra job's train.log also takes the job's log records (Hydra's file
handler on the root logger); these lines never reach the terminal.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from normlab.utils.log_files import file_logger

LOG_NAME = "train.log"
SHOWN = ("val/", "test/")  # rows with these metrics become lines; train rows stay in metrics.csv


def stack_log(run_dir: Path) -> Path | None:
    """The log of the stack worker that trains `run_dir`, when there is one
    (<sweep>/stacks/<stack>.log; provenance.json names the stack of a member of several)."""
    from normlab.stack.plan import stack_name

    try:
        stack = json.loads((Path(run_dir) / "provenance.json").read_text()).get("stack")
    except (OSError, ValueError):
        stack = None
    if stack:
        log = Path(stack["dir"]).with_suffix(".log")
    else:  # a stack of one (a cell the stacked launcher trains alone)
        log = Path(run_dir).parent / "stacks" / f"{stack_name([run_dir])}.log"
    return log if log.is_file() else None


class RunLog(Logger):
    """A member's lines in its train.log (see the module doc); writes on rank 0 only."""

    def __init__(self, run_dir: Path):
        super().__init__()
        self.path = Path(run_dir) / LOG_NAME
        self.logger = (  # the other ranks write nothing
            file_logger("normlab.run", self.path)
            if rank_zero_only.rank == 0
            else logging.Logger("normlab.run", logging.CRITICAL)
        )

    def name_stack(self) -> None:
        """Name the log of the stack this run trains in, where the run's shared lines are."""
        log = stack_log(self.path.parent)
        if log is not None:
            self.logger.info(
                "trained in a stack; the stack's own log (its start, warnings, errors): %s", log
            )

    @property
    def name(self) -> str:
        return "run_log"

    @property
    def version(self) -> str:
        return ""

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the run's config is config.yaml

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if not any(key.startswith(SHOWN) for key in metrics):
            return
        values = " ".join(
            f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}"
            for key, value in sorted(metrics.items())
            if key != "epoch"
        )
        if any(key.startswith("test/") for key in metrics):
            self.logger.info("test: %s", values)
        else:  # a validation's step is the 0-based index of the last optimizer step
            self.logger.info("step %s: %s", "-" if step is None else step + 1, values)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        for handler in self.logger.handlers:
            handler.close()  # reopened (appending) by a later line: the test's
