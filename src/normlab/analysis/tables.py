"""Aggregate completed cells over seeds: one summary row per configuration."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from normlab.analysis.collect import COMPLETED

VAL_ACC = "val/acc"


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


def t_interval(values: pd.Series, level: float = 0.95) -> tuple[float, float, int, float]:
    """(mean, sample std, n, half-width of the Student-t confidence interval of the mean)."""
    values = values.dropna().astype(float)
    n = len(values)
    mean = values.mean() if n else np.nan
    std = values.std(ddof=1) if n > 1 else np.nan
    half = stats.t.ppf((1 + level) / 2, n - 1) * std / np.sqrt(n) if n > 1 else np.nan
    return float(mean), float(std), n, float(half)


def _summary_row(
    cells: pd.DataFrame, at_marks: pd.DataFrame, to_target: pd.Series, marks: list[int]
) -> dict:
    """The aggregate of one configuration's cells."""
    done = cells[cells["status"] == COMPLETED]
    mean, std, n, half = t_interval(done.get("test/acc", pd.Series(dtype=float)))
    reached = to_target.reindex(done["cell"]).dropna()
    row = {
        "n_seeds": n,
        "seeds": " ".join(str(seed) for seed in done["seed"]),
        "not_in_means": int(len(cells) - len(done)),
        "test_acc_mean": mean,
        "test_acc_std": std,
        "test_acc_ci95_low": mean - half,
        "test_acc_ci95_high": mean + half,
    }
    for mark in marks:
        row[f"val_acc@{mark}"] = at_marks.reindex(done["cell"])[mark].mean()
    row["steps_to_target_mean"] = reached.mean() if len(reached) else np.nan
    row["target_reached"] = len(reached)
    row["wall_time_s_mean"] = done.get("wall_time_s", pd.Series(dtype=float)).astype(float).mean()
    return row


def summarize(
    runs: pd.DataFrame, curves: pd.DataFrame, marks: list[int], target_acc: float
) -> pd.DataFrame:
    """One row per configuration (job order); only completed cells enter the numbers."""
    completed = runs[runs["status"] == COMPLETED]
    done_curves = curves[curves["cell"].isin(completed["cell"])]
    at_marks = value_at_marks(done_curves, marks).reindex(columns=marks)
    to_target = steps_to_target(done_curves, target_acc)
    rows = {
        label: _summary_row(cells, at_marks, to_target, marks)
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
