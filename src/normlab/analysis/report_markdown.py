"""The layout of report.md: header, accuracy tables, figures, cells left out, all cells."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from normlab.analysis.collect import COMPLETED
from normlab.analysis.figures import FIGURES
from normlab.analysis.landscape_figures import lr_range_section
from normlab.analysis.markdown import BLANK, fixed, markdown_table

if TYPE_CHECKING:
    from normlab.analysis.report import SweepReport

STATUS_ORDER = ("completed", "failed", "diverged", "broken", "incomplete", "missing")


def _status_counts(runs: pd.DataFrame) -> str:
    """Counts by status ("3 completed, 1 failed, ..."); the usual statuses always shown."""
    counts = runs["status"].value_counts()
    order = [*STATUS_ORDER, *sorted(set(counts.index) - set(STATUS_ORDER))]
    return ", ".join(f"{counts.get(status, 0)} {status}" for status in order)


def _accuracy_table(report: SweepReport) -> str:
    """Final test accuracy, its spread, steps to the target and cost per configuration."""
    s = report.summary
    acc = fixed(4)
    table = pd.DataFrame(
        {
            "configuration": s["configuration"],
            "n seeds": s["n_seeds"],
            "test acc mean": s["test_acc_mean"].map(acc),
            "std": s["test_acc_std"].map(acc),
            "95% CI": [
                f"[{acc(low)}, {acc(high)}]" if pd.notna(low) else BLANK
                for low, high in zip(s["test_acc_ci95_low"], s["test_acc_ci95_high"], strict=True)
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


def _figures_section(report: SweepReport) -> list[str]:
    """A sub-section per figure: the image, or why it was skipped."""
    lines = ["## Figures", "", f"PNG files in `{report.out_dir}`, next to this report.", ""]
    for key, spec in FIGURES.items():
        shown = report.figures.get(key)
        body = f"![{spec.heading}]({spec.file_name})" if shown else f"Skipped: {spec.absent}."
        lines += [f"### {spec.heading}", "", body, ""]
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
        f"{', '.join(f'`{key}`' for key in report.swept_keys) or 'none (one configuration)'}",
        f"- Seeds: {', '.join(seeds) or BLANK}",
        "- Only completed cells enter the numbers; every other cell is listed under "
        '"Cells left out of the means".',
        "",
        "## Final test accuracy",
        "",
        _accuracy_table(report),
        "",
        "Mean and sample standard deviation (ddof=1) of the final `test/acc` over completed seeds; "
        "95% CI of the mean = mean ± t(0.975, n-1) · std / √n (Student t; needs n ≥ 2; "
        "not clipped to [0, 1]). "
        "Steps to target: first logged validation step with `val/acc` ≥ target, averaged over "
        "the seeds that reached it. Steps count optimizer steps done.",
        "",
        "## Validation accuracy at step marks",
        "",
        _marks_table(report) if report.marks else "No `val/acc` logged.",
        "",
        "Mean over seeds of the last `val/acc` logged at or before each step; blank when a run "
        "stopped before the mark.",
        "",
        *lr_range_section(runs),
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
