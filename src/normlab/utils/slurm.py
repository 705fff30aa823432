"""SLURM: the Hydra overrides that give every task of one `srun` run one run folder."""

from __future__ import annotations

import os

from normlab.utils.ranks import slurm_manages_tasks


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
