"""Log a sweep report to W&B: the summary as a wandb.Table, the figures as wandb.Image."""

from __future__ import annotations

import os

from normlab.analysis.report import FIGURES, SweepReport


def log_report_to_wandb(report: SweepReport, project: str = "normlab") -> str:
    """One W&B run (offline unless WANDB_MODE says otherwise), grouped with the sweep's runs."""
    import wandb  # imported here: the report itself never needs W&B

    names = report.runs.get("name")
    group = names.dropna().iloc[0] if names is not None and names.notna().any() else report.name
    with wandb.init(project=project, group=str(group), name=f"report {report.name}",
                    job_type="report", dir=str(report.out_dir),
                    mode=os.environ.get("WANDB_MODE", "offline"),
                    config={"sweep_dir": str(report.sweep_dir), "target_acc": report.target_acc,
                            "marks": report.marks, "swept_keys": report.swept_keys}) as run:
        images = {f"figures/{key}": wandb.Image(str(path), caption=FIGURES[key][1])
                  for key, path in report.figures.items() if path is not None}
        cells = report.runs.drop(columns=["overrides"]).astype(str)
        run.log({"summary": wandb.Table(dataframe=report.summary),
                 "cells": wandb.Table(dataframe=cells), **images})
        return run.dir
