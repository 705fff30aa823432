"""Aggregate completed cells over seeds: one summary row per configuration."""

from __future__ import annotations

import difflib
import re

import numpy as np
import pandas as pd
from scipy import stats

from normlab.analysis.collect import COMPLETED

VAL_ACC = "val/acc"
DEFAULT_METRIC = "test/acc"
# the spread a figure's band and the summary's interval show: a paper's 95% CI of the mean, or the
# lowest and highest seed
BANDS = {"ci95": "95% CI of the mean", "minmax": "min-max"}


class MetricNotLogged(ValueError):
    """`--metric` names a metric no completed cell has."""


def metric_slug(metric: str) -> str:
    """`test/acc` -> `test_acc`: a metric's name in summary.csv columns and file names."""
    return re.sub(r"[^0-9A-Za-z]+", "_", metric).strip("_")


def metric_table(curves: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One metric as a step x cell table (rows: steps done, columns: cells)."""
    values = curves[curves["metric"] == metric]
    return values.pivot_table(index="step", columns="cell", values="value", aggfunc="last")


def default_marks(curves: pd.DataFrame, count: int = 4) -> list[int]:
    """`count` evenly spaced logged validation steps, ending at the last one."""
    steps = np.sort(curves.loc[curves["metric"] == VAL_ACC, "step"].unique())
    if len(steps) <= count:
        return [int(step) for step in steps]
    positions = np.linspace(0, len(steps) - 1, count + 1)[1:].round().astype(int)
    return sorted({int(steps[position]) for position in positions})


def value_at_marks(curves: pd.DataFrame, marks: list[int], metric: str = VAL_ACC) -> pd.DataFrame:
    """Each cell's last `metric` value at or before each mark (cell x mark).

    NaN where the cell logged no value by the mark or stopped before it: a run that ended
    early has no accuracy "at step 2000".
    """
    table = metric_table(curves, metric)
    at = {}
    for cell in table.columns:
        series = table[cell].dropna()
        at[cell] = {
            mark: series[series.index <= mark].iloc[-1]
            if len(series) and series.index[0] <= mark <= series.index[-1]
            else np.nan
            for mark in marks
        }
    return pd.DataFrame.from_dict(at, orient="index", columns=marks)


def steps_to_target(curves: pd.DataFrame, target: float, metric: str = VAL_ACC) -> pd.Series:
    """Per cell: the first logged step where `metric` >= target (NaN: not reached)."""
    table = metric_table(curves, metric)
    return pd.Series(
        {cell: table.index[table[cell] >= target].min() for cell in table.columns}, dtype=float
    )


def band(table: pd.DataFrame, kind: str) -> tuple[pd.Series, pd.Series]:
    """(low, high) at each step of a step x cell table: `ci95` (mean ± t · std / √n; NaN where
    fewer than 2 seeds logged the step) or `minmax`."""
    if kind == "minmax":
        return table.min(axis=1), table.max(axis=1)
    n = table.notna().sum(axis=1)
    half = stats.t.ppf(0.975, (n - 1).clip(lower=1)) * table.std(axis=1, ddof=1) / np.sqrt(n)
    half = half.where(n > 1)
    mean = table.mean(axis=1)
    return mean - half, mean + half


def t_interval(values: pd.Series, level: float = 0.95) -> tuple[float, float, int, float]:
    """(mean, sample std, n, half-width of the Student-t confidence interval of the mean)."""
    values = values.dropna().astype(float)
    n = len(values)
    mean = values.mean() if n else np.nan
    std = values.std(ddof=1) if n > 1 else np.nan
    half = stats.t.ppf((1 + level) / 2, n - 1) * std / np.sqrt(n) if n > 1 else np.nan
    return float(mean), float(std), n, float(half)


def logged_metrics(runs: pd.DataFrame, curves: pd.DataFrame) -> list[str]:
    """The metrics a report can aggregate: result.json's numbers and metrics.csv's columns."""
    from_results = [
        column
        for column in runs.columns
        if "/" in column and pd.to_numeric(runs[column], errors="coerce").notna().any()
    ]
    return sorted({*from_results, *curves["metric"].unique()})


def final_values(runs: pd.DataFrame, curves: pd.DataFrame, metric: str) -> pd.Series:
    """Each completed cell's final `metric`: result.json's value where it has one (test/acc,
    val/acc_best), else the last value metrics.csv logged. MetricNotLogged when cells completed
    and none has it."""
    done = runs[runs["status"] == COMPLETED]
    if done.empty:
        return pd.Series(dtype=float)
    values = pd.Series(dtype=float)
    if metric in runs.columns:
        values = pd.to_numeric(done.set_index("cell")[metric], errors="coerce").dropna()
    if values.empty:
        logged = curves[(curves["metric"] == metric) & curves["cell"].isin(done["cell"])]
        values = logged.sort_values("step").groupby("cell")["value"].last()
    if values.empty:
        known = logged_metrics(runs, curves)
        close = difflib.get_close_matches(metric, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; logged: {', '.join(known)}"
        raise MetricNotLogged(f"--metric {metric}: no completed cell logged it{hint}")
    return values


def _summary_row(
    cells: pd.DataFrame,
    final: pd.Series,
    at_marks: pd.DataFrame,
    to_target: pd.Series,
    marks: list[int],
    slug: str,
) -> dict:
    """The aggregate of one configuration's cells (`final`: each completed cell's metric)."""
    done = cells[cells["status"] == COMPLETED]
    values = final.reindex(done["cell"])
    mean, std, n, half = t_interval(values)
    reached = to_target.reindex(done["cell"]).dropna()
    row = {
        "overrides": cells["overrides_label"].iloc[0] if "overrides_label" in cells else "",
        "n_seeds": n,
        "seeds": " ".join(str(seed) for seed in done["seed"]),
        "not_in_means": int(len(cells) - len(done)),
        f"{slug}_mean": mean,
        f"{slug}_std": std,
        f"{slug}_ci95_low": mean - half,
        f"{slug}_ci95_high": mean + half,
        f"{slug}_min": values.min(),
        f"{slug}_max": values.max(),
    }
    for mark in marks:
        row[f"val_acc@{mark}"] = at_marks.reindex(done["cell"])[mark].mean()
    row["steps_to_target_mean"] = reached.mean() if len(reached) else np.nan
    row["target_reached"] = len(reached)
    row["wall_time_s_mean"] = done.get("wall_time_s", pd.Series(dtype=float)).astype(float).mean()
    return row


def summarize(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    marks: list[int],
    target_acc: float,
    metric: str = DEFAULT_METRIC,
) -> pd.DataFrame:
    """One row per configuration (job order); only completed cells enter the numbers. The final
    `metric`'s columns are named after it: test_acc_mean, test_acc_std, test_acc_ci95_low ..."""
    completed = runs[runs["status"] == COMPLETED]
    done_curves = curves[curves["cell"].isin(completed["cell"])]
    final = final_values(runs, done_curves, metric)
    at_marks = value_at_marks(done_curves, marks).reindex(columns=marks)
    to_target = steps_to_target(done_curves, target_acc)
    slug = metric_slug(metric)
    rows = {
        label: _summary_row(cells, final, at_marks, to_target, marks, slug)
        for label, cells in runs.groupby("configuration", sort=False)
    }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("configuration").reset_index()


def curves_by_configuration(curves: pd.DataFrame, runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each configuration's curves, in job order (configurations without curves left out)."""
    groups = {}
    for label, cells in runs.groupby("configuration", sort=False):
        selected = curves[curves["cell"].isin(cells["cell"])]
        if not selected.empty:
            groups[label] = selected
    return groups
