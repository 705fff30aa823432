"""Log a sweep report to W&B: the summary as a wandb.Table, the figures as wandb.Image."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from normlab.analysis.figures import FIGURES
from normlab.analysis.report import SweepReport


def _first(runs: pd.DataFrame, column: str, default: str) -> str:
    """The first value the cells' configs give `column`, else `default`."""
    values = runs[column].dropna() if column in runs else ()
    return str(values.iloc[0]) if len(values) else default


def log_report_to_wandb(report: SweepReport) -> str:
    """Log to one W&B run in the sweep's project and group (its runs' `logger.wandb.group`,
    else the experiment `name`); offline unless WANDB_MODE says otherwise. Returns its folder."""
    import wandb  # imported here: the report itself never needs W&B

    runs = report.runs
    group = _first(runs, "logger.wandb.group", _first(runs, "name", report.name))
    with wandb.init(
        project=_first(runs, "logger.wandb.project", "normlab"),
        group=group,
        name=f"report {report.name}",
        job_type="report",
        dir=str(report.out_dir),
        mode=os.environ.get("WANDB_MODE", "offline"),
        config={
            "sweep_dir": str(report.sweep_dir),
            "target_acc": report.target_acc,
            "marks": report.marks,
            "swept_keys": report.swept_keys,
        },
    ) as run:
        images = {
            f"figures/{key}": wandb.Image(str(path), caption=FIGURES[key].heading)
            for key, path in report.figures.items()
            if path is not None
        }
        cells = runs.drop(columns=["overrides"]).astype(str)
        run.log(
            {
                "summary": wandb.Table(dataframe=report.summary),
                "cells": wandb.Table(dataframe=cells),
                **images,
            }
        )
        return str(Path(run.dir).parent)
