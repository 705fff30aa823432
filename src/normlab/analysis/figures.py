"""Paper-style figures of a sweep (PNG, and PDF for papers). Each returns None when its metrics
were not logged.

Figures are built with matplotlib's object API (`Figure`, Agg canvas): no pyplot global
state, no display needed, safe inside a running sweep.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from matplotlib.figure import Figure

from normlab.analysis.figure_files import FigureOptions, configuration_legend, save_figure
from normlab.analysis.landscape_figures import (
    plot_ics_cos,
    plot_ics_l2,
    plot_landscape,
    plot_lr_range,
)
from normlab.analysis.tables import (
    BANDS,
    VAL_ACC,
    band,
    curves_by_configuration,
    metric_slug,
    metric_table,
)

# `act/layer3/unit/p15` (one typical unit; `unit_p15` accepted too) or pooled `act/layer3/p15`
PERCENTILE = re.compile(r"^act/layer(\d+)/(unit[/_])?p(15|50|85)$")
GRAD_NORM = re.compile(r"^grad/(layer(\d+)|head)/norm$")


def _panels(count: int, title: str) -> tuple[Figure, list]:
    """A figure with one panel per configuration (at most 4 a row)."""
    columns = min(count, 4)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(4.2 * columns, 3.4 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    for unused in axes[count:]:
        unused.set_visible(False)
    figure.suptitle(title)
    return figure, list(axes[:count])


def plot_curve(
    curves: pd.DataFrame, runs: pd.DataFrame, path: Path, metric: str, band_kind: str
) -> Path | None:
    """`metric` against steps: mean over seeds and its band, one line per configuration."""
    groups = curves_by_configuration(curves[curves["metric"] == metric], runs)
    if not groups:
        return None
    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    axis = figure.subplots()
    for label, selected in groups.items():
        table = metric_table(selected, metric)
        line = axis.plot(table.index, table.mean(axis=1), label=f"{label} (n={table.shape[1]})")
        low, high = band(table, band_kind)
        axis.fill_between(table.index, low, high, color=line[0].get_color(), alpha=0.2, linewidth=0)
    name = "validation accuracy" if metric == VAL_ACC else metric
    axis.set(xlabel="steps", ylabel=name)
    figure.suptitle(f"{name[0].upper()}{name[1:]} (mean over seeds; band: {BANDS[band_kind]})")
    axis.grid(alpha=0.3)
    configuration_legend(figure, axis)
    return save_figure(figure, path)


def plot_val_accuracy(
    curves: pd.DataFrame, runs: pd.DataFrame, path: Path, options: FigureOptions
) -> Path | None:
    """Validation accuracy against steps (Figure 1(a) style)."""
    return plot_curve(curves, runs, path, VAL_ACC, options.band)


def plot_metric(
    curves: pd.DataFrame, runs: pd.DataFrame, path: Path, options: FigureOptions
) -> Path | None:
    """The report's `--metric` against steps, when metrics.csv logged it at several steps and
    it is not validation accuracy (drawn already)."""
    logged = curves[curves["metric"] == options.metric]
    if options.metric == VAL_ACC or logged["step"].nunique() < 2:
        return None
    return plot_curve(curves, runs, path, options.metric, options.band)


def last_layer_percentiles(metrics: set[str]) -> dict[str, str] | None:
    """{"15": metric, "50": ..., "85": ...} of the deepest layer; per-unit names preferred."""
    found: dict[tuple[int, bool], dict[str, str]] = {}
    for metric in metrics:
        match = PERCENTILE.match(metric)
        if match:
            found.setdefault((int(match[1]), bool(match[2])), {})[match[3]] = metric
    complete = [key for key, names in found.items() if len(names) == 3]
    return found[max(complete)] if complete else None


def plot_activation_percentiles(
    curves: pd.DataFrame, runs: pd.DataFrame, path: Path, options: FigureOptions
) -> Path | None:
    """15/50/85th percentiles of the last hidden layer's pre-activation, a panel each."""
    names = last_layer_percentiles(set(curves["metric"].unique()))
    if names is None:
        return None
    groups = curves_by_configuration(curves[curves["metric"].isin(names.values())], runs)
    layer = PERCENTILE.match(names["50"])
    kind = "one typical unit" if layer[2] else "all units pooled"
    figure, axes = _panels(
        len(groups),
        f"Input to the last hidden layer's activation (layer{layer[1]}, {kind}; mean over seeds)",
    )
    for axis, (label, selected) in zip(axes, groups.items(), strict=True):
        for percentile, style in (("85", ":"), ("50", "-"), ("15", ":")):
            table = metric_table(selected, names[percentile])
            axis.plot(table.index, table.mean(axis=1), style, color="C0", label=f"p{percentile}")
        axis.set(title=label, xlabel="steps", ylabel="pre-activation")
        axis.grid(alpha=0.3)
        axis.label_outer()
    axes[0].legend(fontsize="small")
    return save_figure(figure, path)


def plot_gradient_norms(
    curves: pd.DataFrame, runs: pd.DataFrame, path: Path, options: FigureOptions
) -> Path | None:
    """Per-layer gradient norms against steps (log scale), a panel per configuration."""
    matches = [GRAD_NORM.match(metric) for metric in curves["metric"].unique()]
    # layers by depth, the output head last
    metrics = [
        match[0]
        for match in sorted(
            filter(None, matches), key=lambda match: int(match[2]) if match[2] else 10**9
        )
    ]
    if not metrics:
        return None
    groups = curves_by_configuration(curves[curves["metric"].isin(metrics)], runs)
    figure, axes = _panels(len(groups), "Gradient norm per layer (mean over seeds)")
    colors = [f"C{index % 10}" for index in range(len(metrics))]
    for axis, (label, selected) in zip(axes, groups.items(), strict=True):
        for metric, color in zip(metrics, colors, strict=True):
            table = metric_table(selected, metric)
            if not table.empty:
                axis.plot(table.index, table.mean(axis=1), color=color, label=metric.split("/")[1])
        axis.set(title=label, xlabel="steps", ylabel="gradient norm", yscale="log")
        axis.grid(alpha=0.3)
        axis.label_outer()
    axes[0].legend(fontsize="small")
    return save_figure(figure, path)


def instruments_on(runs: pd.DataFrame) -> bool:
    """Whether some cell ran with the instruments (callbacks=instruments)."""
    return _callback_on(runs, "callbacks.instruments.")


def landscape_on(runs: pd.DataFrame) -> bool:
    """Whether some cell ran with the landscape probes (callbacks=landscape)."""
    return _callback_on(runs, "callbacks.landscape.")


def _callback_on(runs: pd.DataFrame, prefix: str) -> bool:
    return any(column.startswith(prefix) and runs[column].notna().any() for column in runs)


def always(runs: pd.DataFrame) -> bool:
    """A figure every sweep should have."""
    return True


def never(runs: pd.DataFrame) -> bool:
    """A figure only some sweeps have (its absence is no problem)."""
    return False


class FigureSpec(NamedTuple):
    """A report figure: its file (`{metric}`: the report's metric), its heading, why it can be
    absent, whether the sweep asked for it (its absence is then noted), how it is drawn."""

    file_name: str
    heading: str
    absent: str
    asked: Callable[[pd.DataFrame], bool]
    plot: Callable[[pd.DataFrame, pd.DataFrame, Path, FigureOptions], Path | None]

    def file(self, options: FigureOptions) -> str:
        """The PNG's file name (a PDF of the same name sits beside it)."""
        return self.file_name.format(metric=metric_slug(options.metric))

    def title(self, options: FigureOptions) -> str:
        """The figure's heading in report.md."""
        return self.heading.format(metric=options.metric)


FIGURES = {
    "val_acc": FigureSpec(
        "val_acc.png",
        "Validation accuracy against steps",
        "no `val/acc` was logged by any completed cell",
        always,
        plot_val_accuracy,
    ),
    "metric": FigureSpec(
        "curve_{metric}.png",
        "`{metric}` against steps",
        "the metric was not logged at several steps",
        never,
        plot_metric,
    ),
    "activations": FigureSpec(
        "activation_percentiles.png",
        "Last hidden layer: 15/50/85th percentiles of the pre-activation",
        "the instruments were on, yet no `act/layerN/unit/p15|p50|p85` (nor pooled "
        "`act/layerN/p15..`) columns are in metrics.csv",
        instruments_on,
        plot_activation_percentiles,
    ),
    "grad_norms": FigureSpec(
        "grad_norms.png",
        "Gradient norm per layer",
        "the instruments were on, yet no `grad/layerK/norm` columns are in metrics.csv",
        instruments_on,
        plot_gradient_norms,
    ),
    "ics_l2": FigureSpec(
        "ics_l2.png",
        "Internal covariate shift per layer: ||G - G'|| (Santurkar def. 2.1)",
        "the landscape probes were on, yet no `ics/<layer>/l2` columns are in metrics.csv",
        landscape_on,
        plot_ics_l2,
    ),
    "ics_cos": FigureSpec(
        "ics_cos.png",
        "Internal covariate shift per layer: cos(G, G')",
        "the landscape probes were on, yet no `ics/<layer>/cos` columns are in metrics.csv",
        landscape_on,
        plot_ics_cos,
    ),
    "landscape": FigureSpec(
        "landscape.png",
        "Loss landscape, gradient predictiveness and beta-smoothness along the gradient",
        "the landscape probes were on, yet no `landscape/*` columns are in metrics.csv",
        landscape_on,
        plot_landscape,
    ),
    "lr_range": FigureSpec(
        "lr_range.png",
        "Final test accuracy against the learning rate",
        "the sweep does not vary `optimizer.lr`",
        never,
        plot_lr_range,
    ),
}
