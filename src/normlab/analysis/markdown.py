"""Markdown tables from pandas frames (no tabulate dependency)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd

BLANK = "-"


def cell_text(value: Any, max_length: int = 300) -> str:
    """One table cell: NaN as a dash, pipes escaped, one line, long text cut."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return BLANK
    text = " ".join(str(value).split()).replace("|", "\\|")
    return text if len(text) <= max_length else text[: max_length - 1] + "…"


def fixed(digits: int) -> Callable[[Any], str]:
    """Formatter: a number with `digits` decimals, a dash for NaN."""

    def _format(value: Any) -> str:
        if value is None or pd.isna(value):
            return BLANK
        return f"{float(value):.{digits}f}"

    return _format


def markdown_table(
    frame: pd.DataFrame, formats: dict[str, Callable[[Any], str]] | None = None
) -> str:
    """A GitHub-flavoured Markdown table; `formats` maps a column to its formatter."""
    formats = formats or {}
    lines = [
        "| " + " | ".join(cell_text(column) for column in frame.columns) + " |",
        "|" + "---|" * len(frame.columns),
    ]
    for _, row in frame.iterrows():
        cells = [
            formats[column](row[column]) if column in formats else cell_text(row[column])
            for column in frame.columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
