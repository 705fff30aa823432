"""Figures and the table of Santurkar et al. 2018's measures (callbacks=landscape) and of a
learning-rate range sweep. Each figure returns None when its metrics (or sweep) are absent."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from normlab.analysis.configurations import configuration_labels
from normlab.analysis.figure_files import FigureOptions, configuration_legend, save_figure
from normlab.analysis.tables import curves_by_configuration, metric_table

ICS = re.compile(r"^ics/(layer(\d+)|head)/(l2|cos)$")
LR = "optimizer.lr"
GOOD_WITHIN = 0.02  # "trains well": mean test accuracy within 2 points of the best lr's


def _ics_metrics(curves: pd.DataFrame, kind: str) -> list[str]:
    """ics/<layer>/<kind> names by depth, the head last."""
    matches = [ICS.match(m) for m in curves["metric"].unique()]
    found = [m for m in matches if m is not None and m[3] == kind]
    return [m[0] for m in sorted(found, key=lambda m: int(m[2]) if m[2] else 10**9)]


def plot_ics(curves: pd.DataFrame, runs: pd.DataFrame, path: Path, kind: str) -> Path | None:
    """ICS (`l2`: ||G - G'||, log axis; `cos`: cos(G, G')) per layer against steps, a panel
    per configuration, mean over seeds."""
    metrics = _ics_metrics(curves, kind)
    if not metrics:
        return None
    groups = curves_by_configuration(curves[curves["metric"].isin(metrics)], runs)
    columns = min(len(groups), 3)
    rows = -(-len(groups) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.3 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    for unused in axes[len(groups) :]:
        unused.set_visible(False)
    what = "||G - G'||" if kind == "l2" else "cos(G, G')"
    figure.suptitle(f"Internal covariate shift per layer (Santurkar def. 2.1): {what}")
    for axis, (label, selected) in zip(axes, groups.items(), strict=False):
        for index, metric in enumerate(metrics):
            table = metric_table(selected, metric)
            if not table.empty:
                axis.plot(
                    table.index,
                    table.mean(axis=1),
                    color=f"C{index % 10}",
                    label=metric.split("/")[1],
                )
        axis.set(title=label, xlabel="steps", ylabel=what)
        if kind == "l2":
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.label_outer()
    axes[0].legend(fontsize="small")
    return save_figure(figure, path)


def plot_ics_l2(
    curves: pd.DataFrame, runs: pd.DataFrame, path: Path, options: FigureOptions
) -> Path | None:
    """`plot_ics` of ||G - G'||."""
    return plot_ics(curves, runs, path, "l2")


def plot_ics_cos(
    curves: pd.DataFrame, runs: pd.DataFrame, path: Path, options: FigureOptions
) -> Path | None:
    """`plot_ics` of cos(G, G')."""
    return plot_ics(curves, runs, path, "cos")


LANDSCAPE_PANELS = (
    ("landscape/loss_min", "landscape/loss_max", "loss L(w - eta g)", "linear"),
    (
        "landscape/grad_diff_min",
        "landscape/grad_diff_max",
        "||grad L(w) - grad L(w - eta g)||",
        "log",
    ),
    ("landscape/beta", "landscape/beta", "effective beta-smoothness", "log"),
)


def plot_landscape(
    curves: pd.DataFrame, runs: pd.DataFrame, path: Path, options: FigureOptions
) -> Path | None:
    """Santurkar Fig. 4 style: per configuration a band from the seed-mean minimum to the
    seed-mean maximum over the eta grid, for the loss along the gradient and the gradient
    predictiveness; the beta-smoothness as a line."""
    if "landscape/loss_min" not in set(curves["metric"].unique()):
        return None
    groups = curves_by_configuration(curves[curves["metric"].str.startswith("landscape/")], runs)
    figure = Figure(figsize=(13.5, 3.8), layout="constrained")
    axes = figure.subplots(1, 3, sharex=True)
    figure.suptitle(
        "Along the gradient, eta = lr x multipliers (band: min-max over eta, mean over seeds)"
    )
    for index, (label, selected) in enumerate(groups.items()):
        color = f"C{index % 10}"
        for axis, (low, high, title, scale) in zip(axes, LANDSCAPE_PANELS, strict=True):
            bottom, top = metric_table(selected, low), metric_table(selected, high)
            if bottom.empty:
                continue
            if low == high:
                axis.plot(bottom.index, bottom.mean(axis=1), color=color, label=label)
            else:
                axis.fill_between(
                    bottom.index,
                    bottom.mean(axis=1),
                    top.mean(axis=1),
                    color=color,
                    alpha=0.35,
                    linewidth=0,
                    label=label,
                )
            axis.set(title=title, xlabel="steps", yscale=scale)
            axis.grid(alpha=0.3)
    configuration_legend(figure, axes[0])
    return save_figure(figure, path)


def lr_range(runs: pd.DataFrame, swept_keys: list[str] | tuple[str, ...]) -> pd.DataFrame | None:
    """Per configuration without the lr (the other swept keys) and per lr: seeds, how many
    diverged (or failed), mean final test accuracy of the completed ones. None when the sweep
    does not vary the lr."""
    if LR not in runs.columns or runs[LR].dropna().nunique() < 2:
        return None
    groups, _ = configuration_labels(runs, [key for key in swept_keys if key != LR])
    frame = runs.assign(
        group=groups,
        lr=pd.to_numeric(runs[LR], errors="coerce"),
        acc=pd.to_numeric(runs.get("test/acc"), errors="coerce"),
    )
    frame = frame[frame["status"] != "missing"]
    rows = []
    for (group, lr), cells in frame.groupby(["group", "lr"], sort=False):
        done = cells[cells["status"] == "completed"]
        rows.append(
            {
                "configuration": group,
                "lr": lr,
                "n seeds": len(cells),
                "completed": len(done),
                "diverged": int((cells["status"] == "diverged").sum()),
                "test acc mean": done["acc"].mean() if len(done) else np.nan,
            }
        )
    return pd.DataFrame(rows).sort_values(["configuration", "lr"], kind="stable")


def largest_good_lr(table: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: the best lr (highest mean test accuracy), and the largest lr whose
    every seed completed with a mean within GOOD_WITHIN of that best."""
    rows = []
    for group, part in table.groupby("configuration", sort=False):
        trained = part[part["completed"] == part["n seeds"]]
        if trained.empty:
            rows.append(
                {
                    "configuration": group,
                    "best lr": np.nan,
                    "best test acc": np.nan,
                    "largest good lr": np.nan,
                    "smallest diverged lr": np.nan,
                }
            )
            continue
        best = trained.loc[trained["test acc mean"].idxmax()]
        good = trained[trained["test acc mean"] >= best["test acc mean"] - GOOD_WITHIN]
        rows.append(
            {
                "configuration": group,
                "best lr": best["lr"],
                "best test acc": best["test acc mean"],
                "largest good lr": good["lr"].max(),
                "smallest diverged lr": part.loc[part["diverged"] > 0, "lr"].min(),
            }
        )
    return pd.DataFrame(rows)


def plot_lr_range(
    curves: pd.DataFrame, runs: pd.DataFrame, path: Path, options: FigureOptions
) -> Path | None:
    """Final test accuracy against the learning rate (log axis), mean over seeds with every
    seed's point; an lr where a seed diverged is marked x at the bottom."""
    table = lr_range(runs, options.swept_keys)
    if table is None:
        return None
    figure = Figure(figsize=(6.6, 4.4), layout="constrained")
    axis = figure.subplots()
    for index, (group, part) in enumerate(table.groupby("configuration", sort=False)):
        color = f"C{index % 10}"
        axis.plot(part["lr"], part["test acc mean"], "o-", color=color, label=group)
        failed = part[part["diverged"] > 0]
        if len(failed):
            axis.plot(
                failed["lr"],
                np.zeros(len(failed)),
                "x",
                color=color,
                markersize=9,
                label=f"{group}: diverged",
            )
    axis.set(
        xscale="log",
        xlabel="learning rate",
        ylabel="final test accuracy",
        title="Learning-rate range (x: a seed diverged)",
        ylim=(-0.03, 1.0),
    )
    axis.grid(alpha=0.3)
    configuration_legend(figure, axis)
    return save_figure(figure, path)


def lr_range_section(runs: pd.DataFrame, swept_keys: list[str]) -> list[str]:
    """report.md's learning-rate range section (empty when the sweep does not vary the lr)."""
    from normlab.analysis.markdown import BLANK, fixed, markdown_table

    table = lr_range(runs, swept_keys)
    if table is None:
        return []
    verdict = largest_good_lr(table)
    lr = fixed(4)

    def rate(value) -> str:
        return BLANK if pd.isna(value) else f"{value:g}"

    return [
        "## Learning-rate range",
        "",
        markdown_table(
            verdict,
            {
                "best lr": rate,
                "largest good lr": rate,
                "smallest diverged lr": rate,
                "best test acc": lr,
            },
        ),
        "",
        f"Largest good lr: the largest rate at which every seed completed with a mean final "
        f"test accuracy within {GOOD_WITHIN * 100:g} points of the configuration's best rate.",
        "",
        markdown_table(table, {"lr": rate, "test acc mean": lr}),
        "",
    ]
