"""The layout of a search's report.md: the study, its trials by objective, parameter
importances, Optuna's figures, the cells that did not complete."""

from __future__ import annotations

from typing import TYPE_CHECKING

from normlab.analysis.markdown import BLANK, fixed, markdown_table
from normlab.analysis.search import INTERMEDIATE, OBJECTIVE, PRUNED_VALUE
from normlab.analysis.search_figures import SEARCH_FIGURES

if TYPE_CHECKING:
    from normlab.analysis.search import SearchReport

FINISHED_CELLS = ("completed", "pruned")


def _significant(value) -> str:
    """A parameter's value to 4 significant digits (trials.csv keeps every digit)."""
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return BLANK if value is None else str(value)


def _trials_table(report: SearchReport) -> str:
    """The trials, best first, the cell folder left to trials.csv."""
    table = report.trials.drop(columns=["cell"])
    formats = {
        OBJECTIVE: fixed(4),
        "test/acc": fixed(4),
        "pruned at step": fixed(0),
        PRUNED_VALUE: fixed(4),
    }
    formats.update(dict.fromkeys(report.searched, _significant))
    return markdown_table(table, formats)


def _header(report: SearchReport) -> list[str]:
    """Where the study is, what it searched, how its trials ended, the best trial."""
    counts = ", ".join(f"{n} {state}" for state, n in report.state_counts.items()) or "none"
    lines = [
        f"# Search report: {report.name}",
        "",
        f"- Sweep folder: `{report.sweep_dir}`",
        f"- Study `{report.study_name}` in `{report.storage}`: {report.direction} `{OBJECTIVE}`",
        f"- Trials: {len(report.trials)} ({counts})",
        "- Searched: "
        + ("; ".join(f"`{key}` {space}" for key, space in report.searched.items()) or BLANK),
    ]
    best = report.best
    if best is not None:
        params = ", ".join(f"`{key}={best[key]}`" for key in report.searched if key in best)
        lines.append(
            f"- Best: trial {best['trial']}, {OBJECTIVE} {fixed(4)(best[OBJECTIVE])} "
            f"(test/acc {fixed(4)(best['test/acc'])}): {params}"
        )
    return [*lines, ""]


def _importances_section(report: SearchReport) -> list[str]:
    lines = ["## Parameter importances", ""]
    if report.importances is not None:
        lines += [markdown_table(report.importances, {"importance": fixed(3)}), ""]
    return [*lines, report.importance_note + ".", ""]


def _figures_section(report: SearchReport) -> list[str]:
    lines = [
        "## Figures",
        "",
        "Drawn by Optuna's own `optuna.visualization.matplotlib` functions; PNG and PDF files "
        "next to this report.",
        "",
    ]
    for key, path in report.figures.items():
        spec = SEARCH_FIGURES[key]
        body = f"![{spec.heading}]({spec.file_name})" if path else f"Not drawn: {spec.absent}."
        lines += [f"### {spec.heading}", "", body, ""]
    return lines


def _unfinished_cells(report: SearchReport) -> list[str]:
    runs = report.runs
    left = runs[~runs["status"].isin(FINISHED_CELLS)]
    lines = ["## Cells that did not complete", ""]
    if left.empty:
        return [*lines, "None: every trial's cell completed or was pruned.", ""]
    columns = ["cell", "status", "error"]
    return [*lines, markdown_table(left.reindex(columns=columns)), ""]


def render_search_markdown(report: SearchReport) -> str:
    """The whole report.md of a search."""
    lines = [
        *_header(report),
        "## Trials by objective",
        "",
        _trials_table(report) if len(report.trials) else "No trials.",
        "",
        f"Completed trials by `{OBJECTIVE}`, best first; then pruned trials by the last "
        f"`{INTERMEDIATE}` they reported, at the step at which the pruner stopped them; then "
        "failed or running trials. A cell that failed or diverged "
        "is a completed trial scoring 0.0 (`note` says why). Parameters to 4 significant digits; "
        "every digit, and each trial's cell folder, in `trials.csv`.",
        "",
        *_importances_section(report),
        *_figures_section(report),
        *_unfinished_cells(report),
    ]
    return "\n".join(lines)
