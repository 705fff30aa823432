"""A search's figures, drawn by Optuna's own matplotlib functions (optuna.visualization.
matplotlib), saved as PNG and PDF. Each returns None when the study has nothing to draw.

Optuna's functions draw through pyplot and set a style sheet: each runs inside an rc_context,
so the style stays with its figure, and the figure is closed once saved.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from matplotlib.lines import Line2D

from normlab.analysis.figure_files import save_figure
from normlab.analysis.search import INTERMEDIATE, OBJECTIVE, scores_vary


def _drawn(draw: Callable, path: Path) -> Path:
    """Run one of Optuna's plot functions, save its figure, close it."""
    import matplotlib
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning

    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        axis = draw()
        figure = axis.figure
        figure.set_size_inches(7.0, 4.6)
        figure.set_layout_engine("constrained")
        saved = save_figure(figure, path)
    plt.close(figure)
    return saved


def _complete(study) -> list:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def plot_history(study, path: Path) -> Path | None:
    """The objective of each completed trial and the best so far
    (optuna.visualization.matplotlib.plot_optimization_history)."""
    from optuna.visualization.matplotlib import plot_optimization_history

    if not _complete(study):
        return None
    return _drawn(lambda: plot_optimization_history(study, target_name=OBJECTIVE), path)


def _mark_pruned(axis, study) -> None:
    """Optuna's intermediate-values plot labels a line per trial (a legend that outgrows the
    figure in a long search): a pruned trial's line gets dashed, with an x where it stopped, and
    one small legend says so."""
    pruned = {trial.number for trial in study.trials if trial.state.name == "PRUNED"}
    for line in list(axis.get_lines()):
        number = str(line.get_label()).removeprefix("Trial")
        if number.isdigit() and int(number) in pruned:
            line.set_linestyle("--")
            steps, values = line.get_data()
            axis.plot(steps[-1:], values[-1:], "x", color=line.get_color(), markersize=9)
    if axis.get_legend() is not None:
        axis.get_legend().remove()
    axis.legend(
        handles=[
            Line2D([], [], color="0.3", marker=".", label="completed"),
            Line2D([], [], color="0.3", linestyle="--", marker="x", label="pruned (x: stopped)"),
        ],
        fontsize="small",
    )
    axis.set_ylabel(f"{INTERMEDIATE} (reported at each validation)")


def plot_intermediate(study, path: Path) -> Path | None:
    """Each trial's val/acc at each validation, pruned trials marked
    (optuna.visualization.matplotlib.plot_intermediate_values)."""
    from optuna.visualization.matplotlib import plot_intermediate_values

    if not any(trial.intermediate_values for trial in study.trials):
        return None

    def draw():
        axis = plot_intermediate_values(study)
        _mark_pruned(axis, study)
        return axis

    return _drawn(draw, path)


def plot_importances(study, path: Path) -> Path | None:
    """Each searched parameter's importance (optuna.visualization.matplotlib.
    plot_param_importances, Optuna's default evaluator)."""
    from optuna.visualization.matplotlib import plot_param_importances

    if not scores_vary(study):
        return None
    try:
        return _drawn(lambda: plot_param_importances(study, target_name=OBJECTIVE), path)
    except (ValueError, RuntimeError):  # importances need parameters that vary
        return None


class SearchFigure(NamedTuple):
    """A search report figure: its file, its heading, why it can be absent, how it is drawn."""

    file_name: str
    heading: str
    absent: str
    plot: Callable[[object, Path], Path | None]


SEARCH_FIGURES = {
    "history": SearchFigure(
        "optimization_history.png",
        f"Optimization history ({OBJECTIVE} of each completed trial, best so far)",
        "no trial completed",
        plot_history,
    ),
    "intermediate": SearchFigure(
        "intermediate_values.png",
        f"Intermediate values ({INTERMEDIATE} at each validation; dashed, x: pruned)",
        "no trial reported a value",
        plot_intermediate,
    ),
    "importances": SearchFigure(
        "param_importances.png",
        "Parameter importances",
        "they need completed trials whose scores vary",
        plot_importances,
    ),
}
