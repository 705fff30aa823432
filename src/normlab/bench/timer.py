"""Loop timing and memory of one benchmark process."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl


class LoopTimer(pl.Callback):
    """Times the fit loop from `on_train_start` to `on_train_end`.

    Start-up (imports, data loading, model and Trainer construction) and the test pass after
    fit are outside the window; periodic validation and checkpoints inside it are included.
    """

    def __init__(self) -> None:
        self.started_at = 0.0  # wall clock (time.time) at the first step: start-up ends here
        self.seconds = 0.0
        self.steps = 0
        self.val_acc: float | None = None
        self.service_peak_kib = 0
        self._start = 0.0
        self._first_step = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started_at, self._start = time.time(), time.perf_counter()
        self._first_step = trainer.global_step

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = time.perf_counter() - self._start
        self.steps = trainer.global_step - self._first_step
        acc = trainer.callback_metrics.get("val/acc")
        self.val_acc = float(acc) if acc is not None else None
        self.service_peak_kib = descendants_peak_kib()  # e.g. the W&B service, still running

    def result(self) -> dict[str, Any]:
        """The measurement as a JSON-ready dict."""
        return {"steps": self.steps, "loop_s": self.seconds, "started_at": self.started_at,
                "val_acc": self.val_acc, "service_peak_kib": self.service_peak_kib}


def peak_rss_kib() -> int:
    """This process's peak resident set size (getrusage ru_maxrss; KiB on Linux).

    It counts everything resident: interpreter, imported libraries, the dataset tensors, the
    model and the autograd buffers. tracemalloc would miss torch's tensor memory entirely.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def descendants_peak_kib() -> int:
    """Sum of the peak RSS (VmHWM) of this process's live descendants; 0 without /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # the command name (field 2) may hold spaces; the parent id is 2nd after its ")"
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    pending, total = list(children.get(os.getpid(), [])), 0
    while pending:
        pid = pending.pop()
        total += _vm_hwm_kib(pid)
        pending.extend(children.get(pid, []))
    return total


def _vm_hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
