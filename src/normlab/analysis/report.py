"""Build a sweep's report folder: report.md, summary.csv, cells.csv and the figures' PNGs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from normlab.analysis.collect import CELL_FILES, COMPLETED, collect
from normlab.analysis.configurations import label_configurations
from normlab.analysis.figures import FIGURES
from normlab.analysis.plan import SweepPlan, read_plan
from normlab.analysis.report_markdown import render_markdown
from normlab.analysis.tables import default_marks, summarize


class NoCells(ValueError):
    """The folder holds no cell and no multirun.yaml: nothing to report."""


@dataclass
class SweepReport:
    """Everything the report shows, for report.md, the CLI and the W&B upload."""

    sweep_dir: Path
    out_dir: Path
    plan: SweepPlan
    runs: pd.DataFrame  # one row per cell, with its `configuration`
    summary: pd.DataFrame  # one row per configuration
    swept_keys: list[str]
    marks: list[int]
    target_acc: float
    figures: dict[str, Path | None] = field(default_factory=dict)  # None: metrics absent

    @property
    def name(self) -> str:
        """`<experiment name>/<sweep folder>`, the way outputs/multirun/ nests them."""
        return f"{self.sweep_dir.parent.name}/{self.sweep_dir.name}"


def build_report(
    sweep_dir: Path,
    target_acc: float = 0.8,
    marks: list[int] | None = None,
    out_dir: Path | None = None,
) -> SweepReport:
    """Read the sweep, aggregate, draw; write everything into `out_dir` (SWEEP_DIR/report)."""
    sweep_dir = Path(sweep_dir).resolve()
    out_dir = Path(out_dir) if out_dir else sweep_dir / "report"
    plan = read_plan(sweep_dir)
    runs, curves = collect(sweep_dir, plan)
    if runs.empty:
        raise NoCells(
            f"no cells (folders with {', '.join(CELL_FILES)}) under {sweep_dir}; "
            "pass one sweep's folder, the one holding multirun.yaml"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    runs, keys = label_configurations(runs, plan)
    done = curves[curves["cell"].isin(runs.loc[runs["status"] == COMPLETED, "cell"])]
    marks = sorted(marks) if marks else default_marks(done)
    summary = summarize(runs, done, marks, target_acc)
    report = SweepReport(sweep_dir, out_dir, plan, runs, summary, keys, marks, target_acc)
    for key, spec in FIGURES.items():
        report.figures[key] = spec.plot(done, runs, out_dir / spec.file_name)
    summary.to_csv(out_dir / "summary.csv", index=False)
    cells = runs.assign(overrides=runs["overrides"].map(" ".join))
    cells.to_csv(out_dir / "cells.csv", index=False)
    (out_dir / "report.md").write_text(render_markdown(report))
    return report
