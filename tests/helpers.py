"""What several test modules share: the CLI runner, background runs and their waits, result
comparison and the config-option list. Test modules import from here, never from each other."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from normlab.paths import CONFIG_DIR


def normlab(module: str, *args: str, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` to completion, output captured (no exception on failure)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def start_training(env: dict, *args: str) -> subprocess.Popen:
    """`python -m normlab.train ARGS` in the background (to be interrupted), stderr captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "normlab.train", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_step(
    run_dir: Path, step: int, process: subprocess.Popen, timeout: float = 120
) -> None:
    """Block until metrics.csv has a row at or past `step` (and a checkpoint exists)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        metrics = run_dir / "metrics.csv"
        if (run_dir / "checkpoints" / "last.ckpt").is_file() and metrics.is_file():
            steps = [
                int(line.split(",")[1])
                for line in metrics.read_text().splitlines()[1:]
                if line.count(",") > 1 and line.split(",")[1].isdigit()
            ]
            if steps and max(steps) >= step:
                return
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached in {timeout}s")


def same_result(a: Path, b: Path) -> None:
    """The two run folders' results agree on every number a run reports."""
    keep = ("test/acc", "test/loss", "val/acc_best", "steps", "status")
    first, second = (json.loads((d / "result.json").read_text()) for d in (a, b))
    assert {k: first[k] for k in keep} == {k: second[k] for k in keep}


def options(group: str) -> list[str]:
    """Every option of a config group, read from conf/ (so the tests follow the folder)."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
