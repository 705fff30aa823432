"""What every report figure shares: its drawing options and its files (PNG, and PDF for papers)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from normlab.analysis.tables import DEFAULT_METRIC

PNG_DPI = 120


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
