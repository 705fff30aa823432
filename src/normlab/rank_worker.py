"""`python -m normlab.rank_worker`: a DDP rank > 0 of this node, joining rank 0's run.

Started by `normlab.lit.ddp.RankJoiningLauncher`, never by hand. It takes the resolved config,
the run folder and the thread count from the NORMLAB_JOIN_RUN environment variable (no Hydra,
no command line, so no second run folder and no second sweep), trains its share of every batch
and writes nothing: rank 0 keeps the books. It ends when rank 0 ends (`die_with_parent`).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
from pathlib import Path

from omegaconf import DictConfig

from normlab.config.options import typed_config
from normlab.lit.ddp import JOIN_ENV, PARENT_ENV

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def joined_config(resolved: dict, threads: int) -> DictConfig:
    """Rank 0's resolved config, typed by the schema again (enums, bounds), with its threads."""
    cfg = typed_config(resolved)
    cfg.threads = threads
    return cfg


def die_with_parent(parent: int) -> None:
    """End this process when rank 0 (pid `parent`) ends, however it ends (SIGKILL included),
    so no rank is left holding its device: on Linux the kernel's parent-death signal (sent when
    the thread that started this process ends: the run's own thread, which outlives its ranks),
    elsewhere a thread that watches the parent pid."""
    armed = False
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    if os.getppid() != parent:  # rank 0 ended before the signal was armed
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        threading.Event().wait(1.0)
    os._exit(1)


def main() -> None:
    """Join the run described by NORMLAB_JOIN_RUN."""
    die_with_parent(int(os.environ[PARENT_ENV]))
    job = json.loads(os.environ[JOIN_ENV])
    from normlab.pipeline import train

    train(joined_config(job["config"], job["threads"]), Path(job["run_dir"]))


if __name__ == "__main__":
    main()
