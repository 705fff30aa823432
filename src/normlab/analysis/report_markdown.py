"""The layout of report.md: header, accuracy tables, figures, cells left out, all cells."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from normlab.analysis.collect import COMPLETED
from normlab.analysis.figures import FIGURES
from normlab.analysis.landscape_figures import lr_range_section
from normlab.analysis.markdown import BLANK, fixed, markdown_table
from normlab.analysis.tables import BANDS

if TYPE_CHECKING:
    from normlab.analysis.report import SweepReport

STATUS_ORDER = ("completed", "failed", "diverged", "broken", "incomplete", "missing")


def _status_counts(runs: pd.DataFrame) -> str:
    """Counts by status ("3 completed, 1 failed, ..."); the usual statuses always shown."""
    counts = runs["status"].value_counts()
    order = [*STATUS_ORDER, *sorted(set(counts.index) - set(STATUS_ORDER))]
    return ", ".join(f"{counts.get(status, 0)} {status}" for status in order)


INTERVALS = {  # a band's interval columns in the summary, and its column heading
    "ci95": ("ci95_low", "ci95_high", "95% CI"),
    "minmax": ("min", "max", "min-max"),
}
INTERVAL_NOTES = {
    "ci95": "95% CI of the mean = mean ± t(0.975, n-1) · std / √n (Student t; needs n ≥ 2; "
    "not clipped to [0, 1])",
    "minmax": "min-max: the lowest and the highest seed",
}


def _accuracy_table(report: SweepReport) -> str:
    """The final metric, its spread, steps to the target and cost per configuration."""
    s, slug, metric = report.summary, report.summary_prefix, report.options.metric
    low, high, heading = INTERVALS[report.options.band]
    value = fixed(4)
    table = pd.DataFrame(
        {
            "configuration": s["configuration"],
            "n seeds": s["n_seeds"],
            f"{metric} mean": s[f"{slug}_mean"].map(value),
            "std": s[f"{slug}_std"].map(value),
            heading: [
                f"[{value(bottom)}, {value(top)}]" if pd.notna(bottom) and pd.notna(top) else BLANK
                for bottom, top in zip(s[f"{slug}_{low}"], s[f"{slug}_{high}"], strict=True)
            ],
            f"steps to val acc ≥ {report.target_acc:g}": [
                f"{fixed(0)(mean)} ({reached}/{n} reached)"
                for mean, reached, n in zip(
                    s["steps_to_target_mean"], s["target_reached"], s["n_seeds"], strict=True
                )
            ],
            "wall time (s)": s["wall_time_s_mean"].map(fixed(1)),
            "left out": s["not_in_means"],
        }
    )
    return markdown_table(table)


def _marks_table(report: SweepReport) -> str:
    """Mean validation accuracy at each step mark."""
    columns = {f"val_acc@{mark}": f"step {mark}" for mark in report.marks}
    table = report.summary[["configuration", "n_seeds", *columns]].rename(columns=columns)
    return markdown_table(
        table.rename(columns={"n_seeds": "n seeds"}), dict.fromkeys(columns.values(), fixed(4))
    )


def _cells_table(runs: pd.DataFrame) -> str:
    """Cell, configuration, seed, status and outcome of the given cells."""
    columns = [
        "cell",
        "configuration",
        "seed",
        "status",
        "test/acc",
        "val/acc_best",
        "steps",
        "wall_time_s",
        "error",
    ]
    return markdown_table(
        runs.reindex(columns=columns),
        {
            "test/acc": fixed(4),
            "val/acc_best": fixed(4),
            "steps": fixed(0),
            "wall_time_s": fixed(1),
        },
    )


def _configurations_table(report: SweepReport) -> str:
    """Each configuration's short label and its full overrides."""
    table = report.summary[["configuration", "overrides", "n_seeds", "not_in_means"]]
    return markdown_table(
        table.rename(columns={"n_seeds": "n seeds", "not_in_means": "left out"}),
    )


def _figures_section(report: SweepReport) -> list[str]:
    """A sub-section per figure the sweep has, or asked for and lacks (with why); figures of
    instruments the sweep did not turn on are left out."""
    lines = [
        "## Figures",
        "",
        f"PNG and PDF files in `{report.out_dir}`, next to this report. Bands around a mean "
        f"over seeds: {BANDS[report.options.band]}.",
        "",
    ]
    for key, path in report.figures.items():
        spec = FIGURES[key]
        title = spec.title(report.options)
        body = f"![{title}]({Path(path).name})" if path else f"Not drawn: {spec.absent}."
        lines += [f"### {title}", "", body, ""]
    return lines


def render_markdown(report: SweepReport) -> str:
    """The whole report.md."""
    runs = report.runs
    expected = report.plan.expected_cells
    left_out = runs[runs["status"] != COMPLETED]
    seeds = sorted({str(seed) for seed in runs["seed"].dropna()}, key=lambda s: (len(s), s))
    lines = [
        f"# Sweep report: {report.name}",
        "",
        f"- Sweep folder: `{report.sweep_dir}`",
        f"- Cells: {len(runs)} found"
        + (
            f" of {expected} expected (multirun.yaml)"
            if expected is not None
            else f" ({report.plan.note})"
        )
        + f": {_status_counts(runs)}",
        f"- Configuration = the swept keys other than the seed: "
        f"{', '.join(f'`{key}`' for key in report.swept_keys) or 'none (one configuration)'}"
        ' (labels: their values; the full overrides under "Configurations")',
        f"- Seeds: {', '.join(seeds) or BLANK}",
        "- Only completed cells enter the numbers; every other cell is listed under "
        '"Cells left out of the means".',
        "",
        f"## Final `{report.options.metric}`",
        "",
        _accuracy_table(report),
        "",
        f"Mean and sample standard deviation (ddof=1) of the final `{report.options.metric}` "
        "over completed seeds (result.json's value, else the last logged in metrics.csv); "
        f"{INTERVAL_NOTES[report.options.band]}. "
        "Steps to target: first logged validation step with `val/acc` ≥ target, averaged over "
        "the seeds that reached it. Steps count optimizer steps done.",
        "",
        "## Configurations",
        "",
        _configurations_table(report),
        "",
        "## Validation accuracy at step marks",
        "",
        _marks_table(report) if report.marks else "No `val/acc` logged.",
        "",
        "Mean over seeds of the last `val/acc` logged at or before each step; blank when a run "
        "stopped before the mark.",
        "",
        *lr_range_section(runs, report.swept_keys),
        *_figures_section(report),
        "## Cells left out of the means",
        "",
        _cells_table(left_out) if len(left_out) else "None: every cell completed.",
        "",
        "## All cells",
        "",
        _cells_table(runs),
        "",
    ]
    return "\n".join(lines)
