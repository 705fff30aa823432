"""Wall time of the main ablation sweep (`make ablation`: 2 activations x 2 norms x 3 seeds = 12
cells) run serially (Hydra's basic launcher), through the parallel launcher and through the
stacked launcher (normlab.stack: the cells as stacks of members, a process per core)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from normlab.paths import CONFIG_DIR
from normlab.utils.threads import available_cores

EXPERIMENT = "experiment=bn_sigmoid_vs_relu"


def sweep_variants(oversubscribed: bool) -> dict[str, list[str]]:
    """Launcher overrides per variant; `oversubscribed` adds parallel jobs that each take all
    cores (threads=<cores>), i.e. the parallel launcher without normlab's thread policy."""
    variants = {
        "serial (basic launcher)": ["hydra/launcher=basic"],
        "parallel launcher": ["hydra/launcher=parallel"],
        "stacked launcher": ["hydra/launcher=stacked"],
    }
    if oversubscribed:
        variants["parallel, no thread policy"] = [
            "hydra/launcher=parallel",
            f"threads={available_cores()}",
        ]
    return variants


def time_sweep(
    variant: str, launcher: list[str], steps: int, seeds: int, env: dict[str, str]
) -> dict[str, Any]:
    """Run the sweep once in a throw-away output folder; wall time from spawn to exit."""
    with tempfile.TemporaryDirectory(prefix="normlab-bench-sweep-") as output_dir:
        command = [
            sys.executable,
            "-m",
            "normlab.train",
            "-m",
            EXPERIMENT,
            *launcher,
            f"trainer.max_steps={steps}",
            f"seed={','.join(map(str, range(seeds)))}",
            f"paths.output_dir={output_dir}",
        ]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(
                f"sweep '{variant}' failed ({done.returncode}):\n{done.stderr[-3000:]}"
            )
        cells = [json.loads(path.read_text()) for path in Path(output_dir).rglob("result.json")]
        threads = sorted(
            {
                json.loads(path.read_text()).get("torch_threads")
                for path in Path(output_dir).rglob("provenance.json")
            }
        )
    failed = [cell for cell in cells if cell.get("status") != "completed"]
    if failed:
        raise RuntimeError(f"sweep '{variant}': {len(failed)} cells did not complete: {failed[0]}")
    return {
        "variant": variant,
        "cells": len(cells),
        "steps": steps,
        "wall_s": wall,
        # the cells' own time (each cell's wall time, summed): what a launcher can overlap
        "cells_s": sum(cell["wall_time_s"] for cell in cells),
        "threads": ",".join(map(str, threads)),
        "command": " ".join(command[1:]),
    }


def time_sweeps(
    steps: int, seeds: int, oversubscribed: bool, env: dict[str, str]
) -> list[dict[str, Any]]:
    """Each variant once (a sweep takes minutes, so no repetitions); speed-up vs serial."""
    rows = [
        time_sweep(variant, launcher, steps, seeds, env)
        for variant, launcher in sweep_variants(oversubscribed).items()
    ]
    serial = rows[0]
    for row in rows:
        row["speedup"] = serial["wall_s"] / row["wall_s"]
        if row["variant"] == "parallel launcher":
            # the speed-up if start-up, worker spawn and the report cost nothing: the jobs
            # overlap perfectly, and the only loss is each cell's own slower time on fewer threads
            row["ceiling"] = launcher_jobs() * serial["cells_s"] / row["cells_s"]
    return rows


def launcher_jobs() -> int:
    """n_jobs of the parallel launcher, read from conf/hydra/launcher/parallel.yaml: the
    benchmark runs outside Hydra, where normlab.utils.threads.parallel_jobs reads it."""
    return int(OmegaConf.load(CONFIG_DIR / "hydra" / "launcher" / "parallel.yaml").n_jobs)
