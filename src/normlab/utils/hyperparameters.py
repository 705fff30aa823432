"""A run's resolved config as its extra loggers' hyperparameters (CSV and W&B have it already:
config.yaml, the W&B run's config).

TensorBoard: hparams.yaml holds the config, and the HParams tab lists the run's hyperparameters
(flattened keys, `optimizer.lr`) beside its metrics. normlab writes the session's start record
only: with no experiment record, TensorBoard takes every scalar the run logs (val/acc,
test/acc, ...) as the tab's metrics, where Lightning's `hp_metric` would name one placeholder.
Any other logger gets `log_hyperparams` of the flattened config.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pytorch_lightning.loggers import Logger, TensorBoardLogger

from normlab.utils.nested import flatten


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """{"optimizer": {"lr": 0.1}} -> {"optimizer.lr": 0.1}: numbers, bools and strings kept,
    anything else (a list, None) as its text."""
    return {
        name: value if isinstance(value, (int, float, bool, str)) else str(value)
        for name, value in flatten(config).items()
    }


def _tensorboard(logger: TensorBoardLogger, config: dict[str, Any]) -> None:
    """hparams.yaml and the HParams tab's session record (see the module doc)."""
    from torch.utils.tensorboard.summary import hparams

    logger.log_hyperparams(config)  # hparams.yaml; default_hp_metric=false: nothing more
    _, session_start, _ = hparams(flat_config(config), {})
    logger.experiment.file_writer.add_summary(session_start)


def _any_logger(logger: Logger, config: dict[str, Any]) -> None:
    logger.log_hyperparams(flat_config(config))


# how a kind of logger records a config; any other Logger: log_hyperparams
WRITERS: dict[type, Callable[[Any, dict[str, Any]], None]] = {TensorBoardLogger: _tensorboard}


def log_config(loggers: Sequence[Logger], config: dict[str, Any]) -> None:
    """Give each logger the run's resolved config as hyperparameters."""
    for logger in loggers:
        writer = next(
            (write for kind, write in WRITERS.items() if isinstance(logger, kind)), _any_logger
        )
        writer(logger, config)
