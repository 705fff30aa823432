"""Sweep bookkeeping: stable sweep folders, finished-cell skipping, and per-cell locks.

A sweep's folder is keyed by its command line (experiment + overrides), so re-running the same
command finds the same folder and each cell's folder (keyed by that cell's overrides) again:
finished cells are skipped, missing / failed / killed ones are run (killed ones resume from
their checkpoint). Different command lines never share a folder, even in the same second.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

SWEEP_KEY_ENV = "NORMLAB_SWEEP_KEY"
# overrides that change how a sweep runs, not what it computes
_NOT_PART_OF_THE_KEY = ("hydra/launcher=", "hydra.launcher.", "threads=", "hydra.verbose")


def sweep_key(overrides: list[str]) -> str:
    """A short, stable name for a sweep's command line (order of overrides ignored)."""
    relevant = sorted(o for o in overrides if not o.startswith(_NOT_PART_OF_THE_KEY))
    digest = hashlib.sha256("\n".join(relevant).encode()).hexdigest()[:10]
    return f"sweep-{digest}"


def cell_status(run_dir: Path) -> str:
    """completed | failed | diverged | preempted | incomplete (started, no result) | missing."""
    result = run_dir / "result.json"
    if result.is_file():
        try:
            return json.loads(result.read_text()).get("status", "incomplete")
        except (OSError, json.JSONDecodeError):
            return "incomplete"
    return "incomplete" if (run_dir / "config.yaml").is_file() else "missing"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CellLock:
    """An exclusive lock file in a cell folder, so two identical sweeps never run one cell twice.

    A lock left by a dead process on this host is stale and taken over.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".cell.lock"
        self.held = False

    def acquire(self) -> bool:
        """True when this process now owns the cell."""
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self._stale():
                    return False
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(
                    {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}, handle
                )
            self.held = True
            return True
        return False

    def _stale(self) -> bool:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return True
        return owner.get("host") == socket.gethostname() and not _pid_alive(
            int(owner.get("pid", 0))
        )

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
