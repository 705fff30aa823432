"""Metric loggers of a run: CSV (metrics.csv in the run folder), W&B (offline by default), any
Lightning logger named in `logger.extra` (each given the run's resolved config as its
hyperparameters), and the run's train.log (normlab.utils.run_log), which also takes W&B's
terminal text: the terminal gets one line per W&B run."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from normlab.config.extras import build_extras
from normlab.lit.lightning_compat import drop_wandb_init_argument
from normlab.sweep import SWEEP_KEY_ENV
from normlab.utils.hyperparameters import log_config
from normlab.utils.run_log import RunLog
from normlab.utils.wandb_run import (
    drop_earlier_runs,
    folder_run_id,
    replay_before,
    wandb_mode,
)
from normlab.utils.wandb_text import route_wandb_text, wandb_text_to

log = logging.getLogger(__name__)
WANDB_INIT_TIMEOUT_S = 60  # bounded wait: a hung W&B service never stalls a sweep for long


def build_loggers(
    logger_cfg,
    run_dir: Path,
    run_name: str,
    group: str,
    tags: list[str],
    config: dict[str, Any],
    resumed_at: int | None = None,
    earlier_rows: list[dict[str, str]] | None = None,
    requirements: bool = True,
) -> list[Logger]:
    """The loggers the `logger` group asks for, all writing into `run_dir`, and its RunLog.

    `resumed_at`: the optimizer step of the checkpoint the run resumes from (None: a new run);
    `earlier_rows`: metrics.csv's rows before it (normlab.utils.metrics_csv.set_aside_metrics);
    `requirements`: whether the W&B run lists the process's installed packages (W&B reads
    every package's metadata for it, ~0.25 s a run here: a stack lists them in its first
    member's run only, the others share its process and so its packages)."""
    run_log = RunLog(run_dir)
    if rank_zero_only.rank == 0:
        run_log.name_stack()
    loggers: list[Logger] = []
    if logger_cfg.csv:
        # name="" and version="" put metrics.csv directly in the run folder
        loggers.append(CSVLogger(save_dir=str(run_dir), name="", version=""))
    wandb_cfg = logger_cfg.wandb
    if wandb_cfg is not None and wandb_mode(wandb_cfg.mode) != "disabled":
        wandb_logger = _wandb_logger(
            wandb_cfg, run_dir, run_name, group, tags, config, requirements
        )
        with wandb_text_to(run_log.logger):
            if started(wandb_logger):
                _continue_history(wandb_logger, wandb_cfg, run_dir, resumed_at, earlier_rows or [])
                loggers.append(wandb_logger)
                _announce(wandb_logger, run_log)
    extras = build_extras(logger_cfg.get("extra"), "logger.extra", save_dir=str(run_dir))
    if rank_zero_only.rank == 0:
        log_config(extras, config)
    return [*loggers, *extras, run_log]


def _wandb_logger(
    wandb_cfg, run_dir, run_name, group, tags, config, requirements: bool
) -> WandbLogger:
    import wandb

    mode = wandb_mode(wandb_cfg.mode)
    if mode == "offline":
        # The run's mode alone leaves W&B's process-wide telemetry on: its first log builds
        # an OpenTelemetry exporter inside the training loop, with threads that post to
        # api.wandb.ai. Offline settings for the process turn it off.
        wandb.setup(settings=wandb.Settings(mode="offline"))
    route_wandb_text()
    sweep_key = os.environ.get(SWEEP_KEY_ENV)  # set by `normlab-train -m`: the sweep's name
    logger = WandbLogger(
        name=run_name,
        save_dir=str(run_dir),
        # one run per folder for life (normlab.utils.wandb_run); the other ranks log nothing
        id=folder_run_id(run_dir) if rank_zero_only.rank == 0 else None,
        resume="allow",
        project=wandb_cfg.project,
        entity=wandb_cfg.entity,
        group=wandb_cfg.group or group,
        tags=list(dict.fromkeys([*tags, *wandb_cfg.tags, *([sweep_key] if sweep_key else [])])),
        job_type=wandb_cfg.job_type,
        mode=mode,
        config=config,
        log_model=wandb_cfg.log_model,
        # a stack trains several members, each with its own run, in one process
        reinit="create_new",
        settings=wandb.Settings(
            init_timeout=WANDB_INIT_TIMEOUT_S, x_save_requirements=requirements
        ),
    )
    # Lightning always passes `anonymous`, which wandb >= 0.19 warns about on every run
    drop_wandb_init_argument(logger, "anonymous")
    return logger


def _continue_history(
    logger: WandbLogger, wandb_cfg, run_dir: Path, resumed_at: int | None, earlier_rows: list
) -> None:
    """The run's summary of val/acc_best is its maximum; an offline run resumed from a
    checkpoint first logs again the rows logged before it (normlab.utils.wandb_run)."""
    if rank_zero_only.rank != 0:
        return
    run = logger.experiment
    run.define_metric("val/acc_best", summary="max")
    if resumed_at is not None and wandb_mode(wandb_cfg.mode) == "offline":
        count, source = replay_before(run, run_dir, run.id, resumed_at, earlier_rows)
        log.info("W&B run %s: %d rows before step %d from %s", run.id, count, resumed_at, source)


def _announce(wandb_logger: WandbLogger, run_log: RunLog) -> None:
    """The one line a W&B run prints on the terminal: where it is (W&B's own text: train.log)."""
    if rank_zero_only.rank != 0:
        return
    run = wandb_logger.experiment
    where = f"wandb sync {Path(run.dir).parent}" if run.offline else run.url
    log.info("W&B run %s: %s (W&B's output: %s)", run.id, where, run_log.path)


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
    """Close the W&B run so the next job of a multirun starts a run of its own; an offline run
    then stays the folder's only one (its earlier offline runs of the same id go).

    `loggers` come from build_loggers, which keeps a WandbLogger only once its run has started;
    W&B's closing text (history, summary) goes to the run's train.log.
    """
    run_log = next((logger for logger in loggers if isinstance(logger, RunLog)), None)
    for logger in loggers:
        if isinstance(logger, WandbLogger) and rank_zero_only.rank == 0:
            run = logger.experiment
            offline = run.offline
            with wandb_text_to(run_log.logger if run_log else None):
                run.finish(exit_code=exit_code)
            if offline:
                drop_earlier_runs(run, Path(logger.save_dir), run.id)
