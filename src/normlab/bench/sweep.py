"""Wall time of the main ablation sweep (`make ablation`: 2 activations x 2 norms x 3 seeds = 12
cells) run serially (Hydra's basic launcher) and through the parallel launcher."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from normlab.utils.threads import available_cores

EXPERIMENT = "experiment=bn_sigmoid_vs_relu"


def sweep_variants(oversubscribed: bool) -> dict[str, list[str]]:
    """Launcher overrides per variant; `oversubscribed` adds parallel jobs that each take all
    cores (threads=<cores>), i.e. the parallel launcher without normlab's thread policy."""
    variants = {
        "serial (basic launcher)": ["hydra/launcher=basic"],
        "parallel launcher": ["hydra/launcher=parallel"],
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
    for row in rows:
        row["speedup"] = rows[0]["wall_s"] / row["wall_s"]
    return rows
