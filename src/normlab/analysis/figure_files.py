"""What every report figure shares: its drawing options and its files (PNG, and PDF for papers)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from normlab.analysis.tables import DEFAULT_METRIC

PNG_DPI = 120
LEGEND_INSIDE = 6  # entries a legend may have inside the axes; more go beside them


@dataclass(frozen=True)
class FigureOptions:
    """How a report draws: the band around a mean over seeds (`ci95` or `minmax`), the
    report's `--metric`, the sweep's swept keys."""

    band: str = "ci95"
    metric: str = DEFAULT_METRIC
    swept_keys: tuple[str, ...] = ()


def save_figure(figure: Figure, path: Path) -> Path:
    """Write `figure` as `path` (PNG) and as the PDF beside it (vector, for a paper); returns
    the PNG's path."""
    path = Path(path)
    figure.savefig(path, dpi=PNG_DPI)
    figure.savefig(path.with_suffix(".pdf"))
    return path


def configuration_legend(figure: Figure, axis) -> None:
    """A legend of configurations: inside the axes when short, else beside them, the figure
    widened by the legend's width so that the axes keep theirs."""
    handles, labels = axis.get_legend_handles_labels()
    if len(labels) <= LEGEND_INSIDE:
        axis.legend(fontsize="small")
        return
    width, height = figure.get_size_inches()
    # small text is ~0.075 in a character wide; a line of the legend ~0.22 in high
    legend_width = 0.8 + 0.075 * max(len(label) for label in labels)
    figure.set_size_inches(width + legend_width, max(height, 0.8 + 0.22 * len(labels)))
    figure.legend(handles, labels, loc="outside right center", fontsize="small")
