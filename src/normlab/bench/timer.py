"""Loop timing and memory of one benchmark process."""

from __future__ import annotations

import contextlib
import os
import resource
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch


class LoopMeter:
    """Wall time, CPU time, steps and peak memory of one training loop, `start()` to `stop()`.

    CPU time (this process, all its threads) is less disturbed than wall time by other
    processes on a shared machine; the headline figure is still wall time.
    """

    def __init__(self) -> None:
        self.started_at = 0.0  # wall clock (time.time) when the loop starts: start-up ends here
        self._wall = self._cpu = 0.0
        self._startup_peak_kib = self._start_rss_kib = 0
        self.measured: dict[str, Any] = {}

    def start(self) -> None:
        """Mark the loop's start; from here on the peak RSS is the loop's own."""
        self._startup_peak_kib = peak_rss_kib()
        self._start_rss_kib = _status_kib("VmRSS")
        reset_peak_rss()
        _finish_device_work()
        self.started_at = time.time()
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def stop(self, steps: int, val_acc: float | None) -> None:
        """Mark the loop's end after `steps` optimizer steps."""
        _finish_device_work()
        wall, cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        loop_peak = _status_kib("VmHWM")
        self.measured = {
            "steps": steps,
            "loop_s": wall,
            "loop_cpu_s": cpu,
            "started_at": self.started_at,
            "val_acc": val_acc,
            "peak_rss_kib": max(self._startup_peak_kib, loop_peak),
            "loop_start_rss_kib": self._start_rss_kib,
            "loop_peak_rss_kib": loop_peak,
            # processes it started that still run, e.g. the W&B service
            "service_peak_rss_kib": descendants_peak_kib(),
        }


class LoopTimer(pl.Callback):
    """A LoopMeter from `on_train_start` to `on_train_end`.

    Start-up (imports, data loading, model and Trainer construction) and the test pass after
    fit are outside the window; periodic validation and checkpoints inside it are included.
    """

    def __init__(self) -> None:
        self.meter = LoopMeter()
        self._first_step = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._first_step = trainer.global_step
        self.meter.start()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # normlab's module keeps every member's (their mean); a plain module logs a scalar
        metrics = getattr(pl_module, "latest", trainer.callback_metrics)
        acc = metrics.get("val/acc")
        self.meter.stop(
            trainer.global_step - self._first_step, float(acc.mean()) if acc is not None else None
        )


def _finish_device_work() -> None:
    """Wait for queued GPU kernels, so the window holds the work of its own steps."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def peak_rss_kib() -> int:
    """This process's peak resident set size so far (getrusage ru_maxrss; KiB on Linux).

    It counts everything resident: interpreter, imported libraries, the dataset tensors, the
    model and the autograd buffers. tracemalloc would miss torch's tensor memory entirely.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def reset_peak_rss() -> None:
    """Restart the VmHWM high-water mark at the current RSS (Linux >= 4.0; else a no-op)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _status_kib(field: str, pid: int | str = "self") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


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
        total += _status_kib("VmHWM", pid)
        pending.extend(children.get(pid, []))
    return total
