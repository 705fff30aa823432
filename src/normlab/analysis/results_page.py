"""docs/results.md, regenerated from the latest finished sweep of each experiment: per
experiment, the command, when and where it ran (date, commit, torch, `cpu_kernels`, device),
the report's accuracy table and its figures, copied beside the page. The README's results
tables are the same tables, between `<!-- results:<experiment> -->` and `<!-- /results -->`.

A sweep counts when every cell it planned ended (completed, or diverged: an outcome the
report shows, as the lr range's); of those, the one whose last cell started
latest is the experiment's. Optuna searches have their own reports and are left out.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from normlab.analysis.collect import COMPLETED, collect
from normlab.analysis.plan import read_plan
from normlab.analysis.report import SweepReport, build_report
from normlab.analysis.report_markdown import accuracy_table
from normlab.analysis.search import is_search

ENDED = (COMPLETED, "diverged")  # a cell's outcomes; failed, killed or missing ones are not
# the README's order; other experiments follow by name
FIRST = ("bn_sigmoid_vs_relu", "bn_paper_fig1", "bn_ics", "bn_landscape", "bn_lr_range", "bn_cnn")
README_BLOCK = re.compile(r"(<!-- results:(\w+) -->\n)(.*?)(<!-- /results -->)", re.S)


@dataclass
class ExperimentRun:
    """One experiment's latest finished sweep and its report."""

    experiment: str
    sweep_dir: Path
    provenance: dict  # the provenance.json of its last cell to start
    finished: datetime
    wall_time_s: float  # first cell's start to last cell's end
    cells: int
    report: SweepReport | None = None  # built for the sweep chosen (drawing is the costly part)

    def run_line(self) -> str:
        """When, where and by what code it ran, in one line."""
        p = self.provenance
        commit = (p.get("git_commit") or "unknown")[:10] + (
            " (dirty)" if p.get("git_dirty") else ""
        )
        return (
            f"`normlab-train -m experiment={self.experiment}`: {self.cells} cells, "
            f"{_duration(self.wall_time_s)}, finished {self.finished:%Y-%m-%d %H:%M %Z}; "
            f"commit {commit}, torch {p.get('packages', {}).get('torch', '?')}, "
            f"cpu_kernels {p.get('cpu_kernels', '?')}, {p.get('device', '?')}"
        )

    def table(self) -> str:
        """The report's accuracy table."""
        return accuracy_table(self.report)


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _started(cell_dir: Path) -> tuple[datetime, dict] | None:
    path = cell_dir / "provenance.json"
    if not path.is_file():
        return None
    provenance = json.loads(path.read_text())
    return datetime.strptime(provenance["started"], "%Y-%m-%dT%H:%M:%S%z"), provenance


def finished_run(experiment: str, sweep_dir: Path) -> ExperimentRun | None:
    """When and where the sweep ran, or None when a planned cell did not end (or it is an
    Optuna search). Its cells are read, not reported: only the chosen sweep's report is built."""
    if not (sweep_dir / "multirun.yaml").is_file() or is_search(sweep_dir):
        return None
    plan = read_plan(sweep_dir)
    runs, _ = collect(sweep_dir, plan)
    if runs.empty or not runs["status"].isin(ENDED).all():
        return None
    if plan.expected_cells is not None and len(runs) < plan.expected_cells:
        return None
    starts, ends = [], []
    latest: tuple[datetime, dict] | None = None
    for cell, wall_time in zip(runs["cell"], runs["wall_time_s"], strict=True):
        found = _started(sweep_dir / cell)
        if found is None:
            return None
        started, provenance = found
        starts.append(started.timestamp())
        ends.append(started.timestamp() + (float(wall_time) if pd.notna(wall_time) else 0.0))
        if latest is None or started >= latest[0]:
            latest = (started, provenance)
    finished = datetime.fromtimestamp(max(ends), tz=latest[0].tzinfo)
    return ExperimentRun(
        experiment, sweep_dir, latest[1], finished, max(ends) - min(starts), len(runs)
    )


def latest_runs(multirun_dir: Path) -> list[ExperimentRun]:
    """Each experiment's latest finished sweep under `multirun_dir` (outputs/multirun), with
    its report built."""
    found: dict[str, ExperimentRun] = {}
    for experiment_dir in sorted(p for p in multirun_dir.iterdir() if p.is_dir()):
        for sweep_dir in sorted(p for p in experiment_dir.iterdir() if p.is_dir()):
            run = finished_run(experiment_dir.name, sweep_dir)
            if run is None:
                continue
            best = found.get(run.experiment)
            if best is None or run.finished > best.finished:
                found[run.experiment] = run
    for run in found.values():
        run.report = build_report(run.sweep_dir)
    order = {name: index for index, name in enumerate(FIRST)}
    return sorted(found.values(), key=lambda r: (order.get(r.experiment, len(FIRST)), r.experiment))


def _copied_figures(run: ExperimentRun, figures_dir: Path) -> list[tuple[str, str]]:
    """The report's PNG figures copied to `figures_dir` as <experiment>_<file>: (caption, name)."""
    copied = []
    for key, path in run.report.figures.items():
        if path is None:
            continue
        name = f"{run.experiment}_{Path(path).name}"
        shutil.copyfile(path, figures_dir / name)
        copied.append((run.report.captions[key], name))
    return copied


def render_page(runs: list[ExperimentRun], figures_dir: Path, page: Path) -> str:
    """The whole of `page` (docs/results.md), figures copied into `figures_dir`, a folder
    under the page's."""
    lines = [
        "# Results",
        "",
        "Regenerated by `make results` (`python -m normlab.results`) from the latest finished "
        "sweep of each experiment under `outputs/multirun/`: the numbers below are those runs' "
        "reports. Digits depend on the CPU kernels (`cpu_kernels`) and the torch version: "
        "compare runs that share them. What each experiment is: its preset in "
        "`conf/experiment/`, and the README.",
        "",
    ]
    figures_dir.mkdir(parents=True, exist_ok=True)
    relative = figures_dir.relative_to(page.parent).as_posix()
    for run in runs:
        lines += [f"## `{run.experiment}`", "", run.run_line(), "", run.table(), ""]
        for caption, name in _copied_figures(run, figures_dir):
            lines += [f"![{caption}]({relative}/{name})", ""]
    if not runs:
        lines += ["No finished sweep found: run an experiment first (`make ablation`).", ""]
    return "\n".join(lines)


def update_readme(text: str, runs: list[ExperimentRun]) -> tuple[str, list[str]]:
    """`text` with each `<!-- results:<experiment> -->` block replaced by that experiment's run
    line and table; also the experiments whose block had no run (left as they were)."""
    by_name = {run.experiment: run for run in runs}
    missing: list[str] = []

    def replace(match: re.Match) -> str:
        run = by_name.get(match.group(2))
        if run is None:
            missing.append(match.group(2))
            return match.group(0)
        return f"{match.group(1)}{run.run_line()}\n\n{run.table()}\n{match.group(4)}"

    return README_BLOCK.sub(replace, text), missing
