"""Read a sweep's cell folders into tidy frames: one row per cell, and long metric curves.

A cell whose files cannot be read becomes a row with status `broken` and the reason in
`error`; a cell without result.json is `incomplete` (killed, or still running); a job that
multirun.yaml expects but that has no folder is `missing`. Only `completed` cells enter
the tables; the others are listed, never dropped.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from normlab.analysis.plan import SweepPlan, override_key, override_value
from normlab.utils.nested import flatten

COMPLETED = "completed"
CELL_FILES = ("config.yaml", "result.json", "metrics.csv", ".hydra")
NOT_CELLS = frozenset({"report", "wandb", ".hydra", "stacks"})  # report, its W&B, stack checkpoints


class BrokenFile(Exception):
    """A cell file exists but cannot be used."""


def cell_dirs(sweep_dir: Path) -> list[Path]:
    """Folders under the sweep that hold a cell's files, at any depth (a subdir named after
    overrides with a `/` in a value nests), in job order when named by job number."""
    found = []
    for folder, subfolders, files in os.walk(sweep_dir):
        path = Path(folder)
        if path != Path(sweep_dir) and "multirun.yaml" in files:
            subfolders.clear()  # another sweep: never merge two sweeps into one report
        elif path != Path(sweep_dir) and any(
            name in files or name in subfolders for name in CELL_FILES
        ):
            found.append(path)
            subfolders.clear()  # a cell's own sub-folders (checkpoints, wandb) are not cells
        else:
            subfolders[:] = [name for name in subfolders if name not in NOT_CELLS]
    return sorted(
        found,
        key=lambda path: (
            not path.name.isdigit(),
            int(path.name) if path.name.isdigit() else 0,
            path,
        ),
    )


def read_result(cell_dir: Path) -> dict[str, Any]:
    """result.json's content; status `incomplete` when absent, `broken` when unparsable."""
    path = Path(cell_dir) / "result.json"
    if not path.is_file():
        return {"status": "incomplete", "error": "no result.json (killed, or still running)"}
    try:
        result = json.loads(path.read_text())
        if not isinstance(result, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        return {"status": "broken", "error": f"result.json: {exc}"}
    result.setdefault("status", "unknown")
    accuracy = result.get("test/acc")
    if result["status"] == COMPLETED and not (
        isinstance(accuracy, (int, float)) and math.isfinite(accuracy)
    ):
        return {**result, "status": "broken", "error": "result.json: completed without test/acc"}
    return result


def _read_yaml(path: Path) -> Any:
    """A YAML file's content, None when absent; BrokenFile when unparsable."""
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise BrokenFile(f"{path.name}: {exc}") from exc


def read_metrics(cell_dir: Path) -> pd.DataFrame | None:
    """metrics.csv as numbers (None when absent); BrokenFile when empty or unparsable."""
    path = Path(cell_dir) / "metrics.csv"
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise BrokenFile(f"metrics.csv: {type(exc).__name__}: {exc}".strip()) from exc
    if "step" not in frame.columns or frame.empty:
        raise BrokenFile("metrics.csv: no `step` column or no rows (truncated?)")
    return frame.apply(pd.to_numeric, errors="coerce").dropna(subset=["step"])


def long_curves(cell: str, metrics: pd.DataFrame) -> pd.DataFrame:
    """Sparse metrics.csv rows -> (cell, step, metric, value); step counts optimizer steps done."""
    values = (
        metrics.drop(columns=["epoch"], errors="ignore")
        .melt(id_vars="step", var_name="metric", value_name="value")
        .dropna(subset=["value"])
    )
    # Lightning logs the 0-based index of the last optimizer step; +1 gives steps done
    values["step"] = values["step"].astype(int) + 1
    return values.assign(cell=cell)[["cell", "step", "metric", "value"]]


def read_cell(cell_dir: Path, name: str) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """One cell's row (config flattened, result, status, error) and its long curves."""
    cell_dir = Path(cell_dir)
    row: dict[str, Any] = {"cell": name, "error": ""}
    result = read_result(cell_dir)
    curves = None
    try:
        row.update(flatten(_read_yaml(cell_dir / "config.yaml") or {}))
        row["overrides"] = tuple(_read_yaml(cell_dir / ".hydra" / "overrides.yaml") or ())
        metrics = read_metrics(cell_dir)
        curves = None if metrics is None else long_curves(name, metrics)
    except BrokenFile as exc:
        result = {**result, "status": "broken", "error": str(exc)}
    row.update(result)
    return row, curves


def _align_with_plan(rows: list[dict[str, Any]], plan: SweepPlan) -> list[dict[str, Any]]:
    """Rows in the plan's job order, with a `missing` row for each job that has no folder;
    cells the plan does not list (an older sweep in the same folder) go last."""
    if plan.jobs is None:
        return rows
    by_job: dict[frozenset, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_job[frozenset(row.get("overrides", ()))].append(row)
    ordered = []
    for number, job in enumerate(plan.jobs):
        if by_job[frozenset(job)]:
            ordered.append(by_job[frozenset(job)].pop(0))
            continue
        seeds = [override_value(o) for o in job if override_key(o) == "seed"]
        seed = yaml.safe_load(seeds[0]) if seeds else None
        ordered.append(
            {
                "cell": f"({number})",
                "status": "missing",
                "overrides": job,
                "seed": seed,
                "error": "no cell folder: the job never started",
            }
        )
    return ordered + [row for left in by_job.values() for row in left]


def collect(sweep_dir: Path, plan: SweepPlan) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, curves): one row per cell (missing jobs included), and all cells' long curves."""
    sweep_dir, rows, curves = Path(sweep_dir), [], []
    for cell_dir in cell_dirs(sweep_dir):
        row, cell_curves = read_cell(cell_dir, str(cell_dir.relative_to(sweep_dir)))
        rows.append(row)
        if cell_curves is not None:
            curves.append(cell_curves)
    runs = pd.DataFrame(_align_with_plan(rows, plan))
    for column in ("cell", "status", "error", "seed", "overrides"):
        if column not in runs:
            runs[column] = pd.Series(dtype=object)
    runs["overrides"] = [value if isinstance(value, tuple) else () for value in runs["overrides"]]
    # integers even where a broken cell has none (a float column would print "1.0")
    runs["seed"] = pd.to_numeric(runs["seed"], errors="coerce").astype("Int64")
    empty = pd.DataFrame(columns=["cell", "step", "metric", "value"])
    return runs, pd.concat(curves, ignore_index=True) if curves else empty
