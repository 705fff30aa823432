"""A sweep cell run through Hydra's job runner (the basic and parallel launchers, SLURM, a
stack of one's multi-device cells): skipped when finished, reused when an earlier sweep has it
(normlab.reuse), else trained under its lock, with any failure recorded in the cell."""

from __future__ import annotations

import logging
from pathlib import Path

from normlab.sweep import (
    CellLock,
    archive_attempt,
    cell_status,
    finished_result,
    record_failure,
    stop_on,
)

log = logging.getLogger("normlab")


def run_cell(cfg, run_dir: Path) -> float | None:
    """A sweep cell: skipped when already completed; any failure is recorded, never raised,
    so one bad cell does not stop the sweep."""
    import traceback

    from omegaconf import OmegaConf

    from normlab.analysis.progress import sweep_progress
    from normlab.paths import last_checkpoint
    from normlab.pipeline import train
    from normlab.reuse import reuse_if_found
    from normlab.utils.gpus import own_gpu
    from normlab.utils.ranks import is_global_zero
    from normlab.utils.threads import parallel_jobs

    finished = finished_result(run_dir)
    if finished is not None:
        log.info("already %s, skipped: %s", finished.get("status"), run_dir)
        return finished.get("val/acc_best")
    if is_global_zero(cfg.trainer):  # a finished cell of an earlier sweep (normlab.reuse)
        resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        reused = reuse_if_found(resolved, run_dir)
        if reused is not None:
            return reused.get("val/acc_best")
    if not is_global_zero(cfg.trainer):  # another SLURM task of this cell: rank 0 keeps the books
        return train(cfg, run_dir)["val/acc_best"]
    lock = CellLock(run_dir)
    if not lock.acquire():
        log.warning("another process is running this cell, skipped: %s", run_dir)
        return None
    try:
        if cell_status(run_dir) == "failed":
            archive_attempt(run_dir, resumes=last_checkpoint(run_dir).is_file())
        with own_gpu(cfg, parallel_jobs()):  # concurrent jobs on a GPU node: one GPU each
            result = train(cfg, run_dir)
        stop_on(result.get("signal"))
        return result["val/acc_best"]
    except Exception as exc:  # recorded in the cell, reported by `normlab.report`
        (run_dir / "error.log").write_text(traceback.format_exc())
        record_failure(run_dir, f"{type(exc).__name__}: {exc}")
        log.error("cell failed (%s: %s): %s", type(exc).__name__, exc, run_dir)
        return None
    finally:
        lock.release()
        print(sweep_progress(run_dir.parent), flush=True)
