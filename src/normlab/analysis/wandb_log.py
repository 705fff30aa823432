"""Log a sweep report to W&B: one run of job_type `report` in the cells' group, its tables as
wandb.Table (an ablation's summary and cells; a search's trials, importances and cells), the
figures as wandb.Image, and the report folder as an Artifact."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from normlab.sweep import SWEEP_KEY_ENV
from normlab.utils.log_files import file_logger
from normlab.utils.wandb_run import RUN_ID_FILE, wandb_mode
from normlab.utils.wandb_text import route_wandb_text, wandb_text_to

ARTIFACT_TYPE = "sweep-report"
TEXT_LOG = "wandb.log"  # W&B's terminal text of the report run, in the report folder
REPORT_FILES = ("report.md", "summary.csv", "cells.csv", "trials.csv", "importances.csv")


def _first(runs: pd.DataFrame, column: str, default: str) -> str:
    """The first value the cells' configs give `column`, else `default`."""
    values = runs[column].dropna() if column in runs else ()
    return str(values.iloc[0]) if len(values) else default


def logged_to_wandb(report) -> bool:
    """Whether the sweep's cells logged to W&B (their config has a `logger.wandb` project)."""
    return (
        "logger.wandb.project" in report.runs and report.runs["logger.wandb.project"].notna().any()
    )


def cell_run_ids(runs: pd.DataFrame) -> list[str]:
    """The W&B run ids of the cells (normlab.utils.wandb_run keeps one in each cell folder)."""
    ids = []
    for run_dir in runs["run_dir"].dropna() if "run_dir" in runs else ():
        path = Path(run_dir) / "wandb" / RUN_ID_FILE
        if path.is_file():
            ids.append(path.read_text().strip())
    return ids


def log_report_to_wandb(report) -> str:
    """Log to one W&B run in the sweep's project and group (its runs' `logger.wandb.group`,
    else the experiment `name`), which names the cells' runs in its config; offline unless
    WANDB_MODE (or the cells' `logger.wandb.mode`) says otherwise; W&B's terminal text goes to
    the report folder's wandb.log. Returns the run's folder."""
    route_wandb_text()
    text = file_logger("wandb", report.out_dir / TEXT_LOG)
    try:
        with wandb_text_to(text):
            return _log_run(report)
    finally:
        for handler in text.handlers:
            handler.close()


def _log_run(report) -> str:
    import wandb  # imported here: the report itself never needs W&B

    runs = report.runs
    cell_runs = cell_run_ids(runs)
    group = _first(runs, "logger.wandb.group", _first(runs, "name", report.name))
    mode = _first(runs, "logger.wandb.mode", "") or None
    with wandb.init(
        project=_first(runs, "logger.wandb.project", "normlab"),
        entity=_first(runs, "logger.wandb.entity", "") or None,
        group=group,
        name=f"report {report.name}",
        job_type="report",
        tags=[tag for tag in (os.environ.get(SWEEP_KEY_ENV),) if tag],
        dir=str(report.out_dir),
        mode=wandb_mode(mode),
        reinit="create_new",
        config={
            **report.wandb_config,
            "cell_runs": cell_runs,  # the ids of the train runs this report covers
        },
    ) as run:
        captions = report.captions
        images = {
            f"figures/{key}": wandb.Image(str(path), caption=captions[key])
            for key, path in report.figures.items()
            if path is not None
        }
        tables = {name: _table(frame) for name, frame in report.tables.items()}
        run.log({**tables, **images})
        artifact = wandb.Artifact(
            re.sub(
                r"[^\w.-]", "-", f"report-{report.sweep_dir.parent.name}-{report.sweep_dir.name}"
            ),
            type=ARTIFACT_TYPE,
            description=f"normlab sweep report of {report.sweep_dir}",
            metadata={"group": group, "cell_runs": cell_runs},
        )
        first, frame = next(iter(report.tables.items()))  # the summary, or the trials
        artifact.add(_table(frame), first)
        for name in REPORT_FILES:
            if (report.out_dir / name).is_file():
                artifact.add_file(str(report.out_dir / name), name=name)
        for path in report.figures.values():
            if path is not None:
                for drawn in (Path(path), Path(path).with_suffix(".pdf")):
                    artifact.add_file(str(drawn), name=f"figures/{drawn.name}")
        run.log_artifact(artifact)
        return str(Path(run.dir).parent)


def _table(frame: pd.DataFrame):
    """A frame as a wandb.Table, mixed-type columns as text (W&B types a column by its values)."""
    import wandb

    mixed = [column for column in frame if frame[column].dtype == object]
    return wandb.Table(dataframe=frame.astype(dict.fromkeys(mixed, str)))
