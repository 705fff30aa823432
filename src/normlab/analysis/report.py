"""Build a sweep's report folder: report.md, summary.csv, cells.csv and the figures (PNG + PDF).

An Optuna search (hparams_search=...) gets a search report instead (normlab.analysis.search):
its trials by objective, not configurations over seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from normlab.analysis.collect import CELL_FILES, COMPLETED, collect
from normlab.analysis.configurations import label_configurations
from normlab.analysis.figure_files import FigureOptions
from normlab.analysis.figures import FIGURES
from normlab.analysis.plan import SweepPlan, read_plan
from normlab.analysis.report_markdown import render_markdown
from normlab.analysis.tables import BANDS, DEFAULT_METRIC, default_marks, metric_slug, summarize


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
    options: FigureOptions = field(default_factory=FigureOptions)
    figures: dict[str, Path | None] = field(default_factory=dict)  # None: metrics absent

    @property
    def name(self) -> str:
        """`<experiment name>/<sweep folder>`, the way outputs/multirun/ nests them."""
        return f"{self.sweep_dir.parent.name}/{self.sweep_dir.name}"

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables a W&B report run logs, by name."""
        return {"summary": self.summary, "cells": self.runs.drop(columns=["overrides"])}

    @property
    def wandb_config(self) -> dict:
        """What the W&B report run records in its config."""
        return {
            "sweep_dir": str(self.sweep_dir),
            "target_acc": self.target_acc,
            "marks": self.marks,
            "swept_keys": self.swept_keys,
            "metric": self.options.metric,
            "band": self.options.band,
        }

    @property
    def captions(self) -> dict[str, str]:
        """Each drawn figure's heading, by key."""
        return {key: FIGURES[key].title(self.options) for key in self.figures}

    def summary_lines(self) -> list[str]:
        """One terminal line per configuration: its final metric over seeds."""
        slug = self.summary_prefix
        lines = []
        width = max((len(label) for label in self.summary["configuration"]), default=0)
        for row in self.summary.to_dict("records"):
            if row["n_seeds"] == 0:
                outcome = f"no completed cell ({row['not_in_means']} left out)"
            else:
                outcome = f"{row[f'{slug}_mean']:.4f} ± {row[f'{slug}_std']:.4f}"
            lines.append(
                f"{row['configuration']:<{width}}  {self.options.metric} {outcome}"
                f" (n={row['n_seeds']})"
            )
        return lines

    @property
    def summary_prefix(self) -> str:
        """The summary columns' prefix of the report's metric (`test_acc`)."""
        return metric_slug(self.options.metric)


def build_report(
    sweep_dir: Path,
    target_acc: float = 0.8,
    marks: list[int] | None = None,
    out_dir: Path | None = None,
    metric: str = DEFAULT_METRIC,
    band: str = "ci95",
):
    """Read the sweep, aggregate, draw; write everything into `out_dir` (SWEEP_DIR/report).
    Returns a SweepReport, or a SearchReport for an Optuna search's sweep."""
    from normlab.analysis.search import build_search_report, is_search

    if band not in BANDS:
        raise ValueError(f"band={band}: one of {', '.join(BANDS)}")
    sweep_dir = Path(sweep_dir).resolve()
    out_dir = Path(out_dir) if out_dir else sweep_dir / "report"
    plan = read_plan(sweep_dir)
    runs, curves = collect(sweep_dir, plan)
    if runs.empty:
        raise NoCells(
            f"no cells (folders with {', '.join(CELL_FILES)}) under {sweep_dir}; "
            "pass one sweep's folder, the one holding multirun.yaml"
        )
    if is_search(sweep_dir):
        return build_search_report(sweep_dir, out_dir, runs)
    runs, keys = label_configurations(runs, plan)
    done = curves[curves["cell"].isin(runs.loc[runs["status"] == COMPLETED, "cell"])]
    marks = sorted(marks) if marks else default_marks(done)
    summary = summarize(runs, done, marks, target_acc, metric)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = FigureOptions(band=band, metric=metric, swept_keys=tuple(keys))
    report = SweepReport(sweep_dir, out_dir, plan, runs, summary, keys, marks, target_acc, options)
    for key, spec in FIGURES.items():
        drawn = spec.plot(done, runs, out_dir / spec.file(options), options)
        if drawn is not None or spec.asked(runs):
            report.figures[key] = drawn
    summary.to_csv(out_dir / "summary.csv", index=False)
    cells = runs.assign(overrides=runs["overrides"].map(" ".join))
    cells.to_csv(out_dir / "cells.csv", index=False)
    (out_dir / "report.md").write_text(render_markdown(report))
    return report
