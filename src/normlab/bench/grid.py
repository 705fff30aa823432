"""The grid case: a 4 x `seeds`-cell sweep of the tiny MLP through the CLI, stacked, W&B offline,
report included (1,024 cells at the default 256 seeds); its wall time, the sweep parent's own CPU
time, and whether every cell finished with its folder, metrics.csv, result.json and W&B run."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GRID = [
    "hydra/launcher=stacked",
    "data=mnist1d",
    "model.width=16",
    "optimizer.lr=0.01,0.03,0.1,0.3",
    "logger=wandb",
]


def _cpu_seconds(pid: int) -> float | None:
    """The process's own user + system CPU seconds (not its children's), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_grid(seeds: int, steps: int, env: dict[str, str]) -> dict[str, Any]:
    """Run the grid in a fresh folder; its measurements."""
    with tempfile.TemporaryDirectory(prefix="normlab-bench-grid-") as root:
        command = [
            sys.executable,
            "-m",
            "normlab.train",
            "-m",
            *GRID,
            f"seed=range(0,{seeds})",
            f"trainer.max_steps={steps}",
            f"paths.output_dir={root}",
        ]
        log = Path(root) / "grid.log"  # a file, not a pipe: nothing waits on a reader
        started = time.perf_counter()
        with log.open("w") as out:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            parent_cpu = 0.0
            while process.poll() is None:  # the parent's own CPU, read until it exits
                parent_cpu = _cpu_seconds(process.pid) or parent_cpu
                time.sleep(0.5)
        wall = time.perf_counter() - started
        output = log.read_text()
        if process.returncode != 0:
            raise RuntimeError(f"grid sweep failed ({process.returncode}):\n{output[-3000:]}")
        cells = [p.parent for p in Path(root).glob("multirun/*/*/*/result.json")]
        complete = [
            cell
            for cell in cells
            if (cell / "metrics.csv").is_file()
            and (cell / "config.yaml").is_file()
            and list((cell / "wandb").glob("offline-run-*"))
            and '"completed"' in (cell / "result.json").read_text()
        ]
        reports = list(Path(root).glob("multirun/*/*/report/report.md"))
    return {
        "cells": 4 * seeds,
        "steps": steps,
        "wall_s": round(wall, 1),
        "parent_cpu_s": round(parent_cpu, 1),
        "complete_cells": len(complete),
        "report": bool(reports),
    }


def grid_table(grid: dict[str, Any]) -> str:
    """The grid's measurements as a Markdown table."""
    return "\n".join(
        [
            "| grid | cells x steps | wall s | sweep parent's CPU s | complete cells | report |",
            "|---|---|---:|---:|---:|---|",
            f"| tiny MLP, MNIST-1D, stacked, W&B offline | {grid['cells']} x {grid['steps']} | "
            f"{grid['wall_s']} | {grid['parent_cpu_s']} | {grid['complete_cells']} | "
            f"{'yes' if grid['report'] else 'no'} |",
        ]
    )
