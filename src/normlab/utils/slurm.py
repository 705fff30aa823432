"""SLURM: one run folder for the tasks of one `srun` run, and one preemption / timeout story.

Whatever signal stops a job (SIGTERM on preemption, USR1 or USR2 before the time limit), the
preemption callback (normlab.callbacks.preemption) stops every rank at one resume-safe step
and saves checkpoints/last.ckpt; the run then closes its files and writes result.json
(`preempted`), and only then, outside any signal handler, global rank 0 requeues the job:

- a submitit job (hydra/launcher=slurm, stacked_slurm) through submitit's own checkpointing
  interface: the handler submitit installed calls the submitted callable's `checkpoint()`
  (a DelayedSubmission of the same call), counts time-outs against `max_num_timeout` and runs
  `scontrol requeue`; the requeued job finds the cell's last.ckpt and resumes;
- any other SLURM batch job (your own sbatch script): `scontrol requeue $SLURM_JOB_ID`.

Lightning's own SLURM auto-requeue (an `hpc_ckpt` saved inside its USR1 handler) is off, and a
stale `hpc_ckpt_*.ckpt` is moved aside, so fit and test never load one.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from normlab.utils.ranks import slurm_manages_tasks

log = logging.getLogger("normlab")


def slurm_run_overrides(args: list[str]) -> list[str]:
    """Hydra overrides that give all SLURM tasks of one `srun` single run one run folder.

    Each task composes its own config, so `${now:}` and `${uid:}` would name a folder per task;
    the job and step ids name a shared one instead. Tasks > 0 leave .hydra/ to task 0 and log
    to rank<N>.log. Sweeps need nothing: the submitit launcher hands every task the cell folder.
    """
    if not slurm_manages_tasks() or int(os.environ["SLURM_NTASKS"]) < 2:
        return []
    if {"-m", "--multirun"}.intersection(args):
        return []
    extra = []
    if not any(arg.startswith("hydra.run.dir=") for arg in args):
        run = f"slurm-{os.environ.get('SLURM_JOB_ID', 0)}.{os.environ.get('SLURM_STEP_ID', 0)}"
        extra.append(f"hydra.run.dir=${{paths.output_dir}}/runs/{run}")
    rank = int(os.environ.get("SLURM_PROCID", 0))
    if rank:
        extra += ["hydra.output_subdir=null", f"hydra.job.name=rank{rank}"]
    return extra


def lightning_cluster_plugins() -> list:
    """Trainer plugins: under SLURM, Lightning's SLURMEnvironment with its auto-requeue off."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    # auto_requeue=True would put a USR1 handler in place that saves an hpc_ckpt from inside
    # the handler (mid-step, with normlab's collective checkpoint hook) and requeues on rank 0
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def set_aside_hpc_checkpoints(folder: Path) -> None:
    """Move Lightning HPC checkpoints out of `folder` (into lightning-hpc-ignored/): under SLURM
    Lightning would resume a fit, or test, from the newest one instead of the run's own weights."""
    # checkpoint_connector.py `_hpc_resume_path`: any file in the folder whose name holds
    # "hpc_ckpt_" counts, so a renamed one would still be found; a subfolder is not listed
    for stale in sorted(Path(folder).glob("*hpc_ckpt_*")):
        aside = stale.parent / "lightning-hpc-ignored"
        aside.mkdir(exist_ok=True)
        stale.rename(aside / stale.name)
        log.warning("set aside a Lightning HPC checkpoint (normlab uses last.ckpt): %s", stale)


def preemption_requeue() -> Callable[[], None]:
    """What requeues this job once a preempted run has saved and closed its files.

    Call before the fit: it keeps the handler submitit installed for its requeue signal
    (the preemption callback replaces it during the fit)."""
    submitit = _submitit_handler()
    if submitit is not None:
        # submitit 1.5.4 (core/job_environment.py): SignalHandler.checkpoint_and_try_requeue
        # returns at once on tasks > 0; on task 0 it calls the callable's checkpoint(), dumps
        # the DelayedSubmission, requeues (or raises UncompletedJobError after too many
        # time-outs) and exits the process (SystemExit, so `finally` blocks still run)
        return lambda: submitit(_requeue_signal(), None)
    if slurm_manages_tasks() and "SLURM_JOB_ID" in os.environ:
        return _scontrol_requeue
    return lambda: None


def _requeue_signal() -> int:
    from submitit import JobEnvironment

    return getattr(signal, "SIG" + JobEnvironment.USR_SIG)


def _submitit_handler():
    """The handler submitit installed for its requeue signal, when this is a submitit SLURM job."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return None
    from submitit.core.job_environment import SignalHandler

    handler = signal.getsignal(_requeue_signal())
    return handler if isinstance(getattr(handler, "__self__", None), SignalHandler) else None


def _scontrol_requeue() -> None:
    if int(os.environ.get("SLURM_PROCID", 0)):
        return  # global rank 0 requeues the job
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]
    try:
        done = subprocess.run(
            ["scontrol", "requeue", job], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("scontrol requeue %s failed: %s", job, exc)
        return
    if done.returncode:
        log.warning("scontrol requeue %s failed: %s", job, done.stderr.strip())
    else:
        log.warning("requeued SLURM job %s; it resumes from checkpoints/last.ckpt", job)
