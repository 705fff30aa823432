"""Keep metrics.csv whole across a resume: Lightning's CSV logger starts a fresh file."""

from __future__ import annotations

import csv
from pathlib import Path

import torch


def checkpoint_step(checkpoint: Path) -> int:
    """The optimizer steps a checkpoint had done."""
    return int(torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"])


def set_aside_metrics(run_dir: Path, step: int) -> list[dict[str, str]]:
    """Rows logged before the checkpoint (at `step`) a run resumes from. The old file is kept
    as metrics.before-resume.csv; rows it has past the checkpoint are logged again."""
    metrics = run_dir / "metrics.csv"
    if not metrics.is_file():
        return []
    backup = run_dir / "metrics.before-resume.csv"
    metrics.replace(backup)
    with backup.open(newline="") as handle:
        # `step` in the file is the 0-based index of the last optimizer step
        return [
            row for row in csv.DictReader(handle) if row.get("step") and int(row["step"]) < step
        ]


def merge_metrics(metrics: Path, earlier_rows: list[dict[str, str]]) -> None:
    """Prepend the earlier rows to the resumed run's metrics.csv, with the union of columns."""
    later_rows: list[dict[str, str]] = []
    columns: list[str] = []
    if metrics.is_file():
        with metrics.open(newline="") as handle:
            reader = csv.DictReader(handle)
            later_rows, columns = list(reader), list(reader.fieldnames or [])
    for row in earlier_rows:
        columns += [key for key in row if key not in columns]
    partial = metrics.with_name(".metrics.csv.tmp")
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(earlier_rows + later_rows)
    partial.replace(metrics)
