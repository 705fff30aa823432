"""An Optuna search's report, written: the study read back and tabulated
(normlab.analysis.search), Optuna's figures (search_figures), report.md (search_markdown) and
the tables as CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from normlab.analysis.search import (
    SearchReport,
    importances,
    load_study,
    searched_space,
    trials_table,
)
from normlab.analysis.search_figures import SEARCH_FIGURES
from normlab.analysis.search_markdown import render_search_markdown


def build_search_report(sweep_dir: Path, out_dir: Path, runs: pd.DataFrame) -> SearchReport:
    """Read the study, tabulate, draw; write report.md, trials.csv, importances.csv, cells.csv
    and the figures (PNG + PDF) into `out_dir`."""
    study, spec = load_study(sweep_dir)
    found, note = importances(study)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = SearchReport(
        sweep_dir=sweep_dir,
        out_dir=out_dir,
        runs=runs,
        study_name=study.study_name,
        storage=spec,
        direction=study.direction.name.lower(),
        trials=trials_table(study, runs, sweep_dir),
        importances=found,
        importance_note=note,
        searched=searched_space(study),
    )
    for key, spec_ in SEARCH_FIGURES.items():
        report.figures[key] = spec_.plot(study, out_dir / spec_.file_name)
        report.captions[key] = spec_.heading
    report.trials.to_csv(out_dir / "trials.csv", index=False)
    if found is not None:
        found.to_csv(out_dir / "importances.csv", index=False)
    runs.assign(overrides=runs["overrides"].map(" ".join)).to_csv(
        out_dir / "cells.csv", index=False
    )
    (out_dir / "report.md").write_text(render_search_markdown(report))
    return report
