"""A one-line progress summary of a sweep, cheap enough to print after every job."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from normlab.analysis.collect import COMPLETED, cell_dirs, read_result
from normlab.analysis.plan import read_plan


def _elapsed(seconds: float) -> str:
    """12345 -> "3:25:45"."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def sweep_progress(sweep_dir: Path) -> str:
    """One line of cells done / expected, by status, and time since the sweep started.

    Example: "sweep X: 5/8 cells done (4 completed, 1 failed), 1 running or killed, elapsed
    0:03:10". Elapsed counts from multirun.yaml's time, which Hydra rewrites when a sweep
    is resumed.
    """
    sweep_dir = Path(sweep_dir)
    statuses = Counter(read_result(cell)["status"] for cell in cell_dirs(sweep_dir))
    unfinished = statuses.pop("incomplete", 0)
    done = sum(statuses.values())
    expected = read_plan(sweep_dir).expected_cells
    parts = [
        f"{statuses[COMPLETED]} completed",
        *(f"{count} {status}" for status, count in sorted(statuses.items()) if status != COMPLETED),
    ]
    start = sweep_dir / "multirun.yaml"
    elapsed = _elapsed(time.time() - start.stat().st_mtime) if start.is_file() else "unknown"
    return (
        f"sweep {sweep_dir.name}: {done}/{expected if expected is not None else '?'} cells "
        f"done ({', '.join(parts)}), {unfinished} running or killed, elapsed {elapsed}"
    )
