"""Read an offline W&B run back with `wandb leet inspect --json` (no network, no login)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path


def wandb_records(run_dir: Path) -> list[dict]:
    """Every record of the run's .wandb log, as dicts."""
    [log] = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    binary = shutil.which("wandb") or str(Path(sys.executable).with_name("wandb"))
    done = subprocess.run(
        [binary, "leet", "inspect", "--json", str(log)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def wandb_history(run_dir: Path) -> list[dict]:
    """The logged history rows as {metric: value}."""
    return [r["history"]["item"] for r in wandb_records(run_dir) if r["type"] == "history"]


def wandb_config(run_dir: Path) -> dict:
    """The run's config as logged at init."""
    return next(r["run"]["config"]["update"] for r in wandb_records(run_dir) if r["type"] == "run")
