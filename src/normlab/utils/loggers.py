"""Metric loggers of a run: CSV (metrics.csv in the run folder) and W&B (offline by default)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

from normlab.lit.lightning_compat import drop_wandb_init_argument

log = logging.getLogger(__name__)
WANDB_INIT_TIMEOUT_S = 60  # bounded wait: a hung W&B service never stalls a sweep for long


def build_loggers(
    logger_cfg, run_dir: Path, run_name: str, group: str, tags: list[str], config: dict[str, Any]
) -> list[Logger]:
    """The loggers the `logger` group asks for, all writing into `run_dir`."""
    loggers: list[Logger] = []
    if logger_cfg.csv:
        # name="" and version="" put metrics.csv directly in the run folder
        loggers.append(CSVLogger(save_dir=str(run_dir), name="", version=""))
    wandb_cfg = logger_cfg.wandb
    if wandb_cfg is not None and wandb_cfg.mode.value != "disabled":
        import wandb

        if wandb_cfg.mode.value == "offline":
            # The run's mode alone leaves W&B's process-wide telemetry on: its first log builds
            # an OpenTelemetry exporter (~0.1 s inside the training loop, two threads that post
            # to api.wandb.ai). Offline settings for the process turn it off.
            wandb.setup(settings=wandb.Settings(mode="offline"))
        wandb_logger = WandbLogger(
            name=run_name,
            save_dir=str(run_dir),
            project=wandb_cfg.project,
            entity=wandb_cfg.entity,
            group=wandb_cfg.group or group,
            tags=[*tags, *wandb_cfg.tags],
            mode=wandb_cfg.mode.value,
            config=config,
            log_model=wandb_cfg.log_model,
            # a stack trains several members, each with its own run, in one process
            reinit="create_new",
            settings=wandb.Settings(init_timeout=WANDB_INIT_TIMEOUT_S),
        )
        # Lightning always passes `anonymous`, which wandb >= 0.19 warns about on every run
        drop_wandb_init_argument(wandb_logger, "anonymous")
        if started(wandb_logger):
            loggers.append(wandb_logger)
    return loggers


def started(wandb_logger: WandbLogger) -> bool:
    """Start the W&B run now, so an outage costs one warning here instead of a failed run.

    Training goes on with CSV alone when W&B cannot start (no login, no network, a timeout).
    """
    try:
        wandb_logger.experiment  # noqa: B018  (the property starts the run)
    except Exception as exc:
        log.warning(
            "W&B could not start (%s: %s); continuing with CSV only",
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        return False
    return True


def finish_wandb(loggers: list[Logger], exit_code: int = 0) -> None:
    """Close the W&B run so the next job of a multirun starts a run of its own.

    `loggers` come from build_loggers, which keeps a WandbLogger only once its run has started.
    """
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish(exit_code=exit_code)
