"""Hydra callback: every sweep ends with its report (tables, figures) and its summary on the
terminal: a line per configuration (an ablation), or the best trials (a search)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class ReportOnSweepEnd(Callback):
    """Runs `normlab.report` on the sweep folder once all cells have finished."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from normlab.analysis.report import build_report

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            report = build_report(sweep_dir)
        except Exception as exc:  # a report problem must not turn a finished sweep into a failure
            log.warning(
                "no report for %s (%s: %s); retry with `python -m normlab.report %s`",
                sweep_dir,
                type(exc).__name__,
                exc,
                sweep_dir,
            )
            return
        for line in report.summary_lines():
            print(line)
        print(f"report: {report.out_dir / 'report.md'}")
        _log_to_wandb(report)


def _log_to_wandb(report) -> None:
    """A sweep whose cells logged to W&B gets its report run there too (a W&B problem only
    warns: the report on disk is complete)."""
    from normlab.analysis.wandb_log import log_report_to_wandb, logged_to_wandb

    if not logged_to_wandb(report):
        return
    try:
        print(f"report on W&B: {log_report_to_wandb(report)}")
    except Exception as exc:
        log.warning("report not logged to W&B (%s: %s)", type(exc).__name__, exc)
