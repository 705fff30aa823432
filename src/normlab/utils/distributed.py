"""Multi-device runs: world size and ranks, the global-batch rule, rank-zero bookkeeping.

`data.batch_size` is the global batch: each of the `trainer.devices x trainer.num_nodes` ranks
trains on its contiguous share of every batch (`normlab.data.batches`), so a run on N devices
sees the same examples per step as a run on one. Only global rank 0 writes the run folder.
Nothing here imports Lightning at module level: config checks run before the heavy imports.
"""

from __future__ import annotations

import os
from typing import Any

from normlab.config.errors import ConfigError
from normlab.utils.threads import available_cores, parallel_jobs

# Strategies that start their ranks in ways normlab's run folders do not survive (ddp_spawn:
# results stay in the spawned processes; Lightning's plain ddp: children re-run the command).
_MULTI_PROCESS_STRATEGIES = ("auto", "ddp")


def devices_per_node(trainer_cfg) -> int | None:
    """Processes per node that `trainer.devices` asks for; None when only the machine knows (-1)."""
    devices = trainer_cfg.devices
    if isinstance(devices, str):
        text = devices.strip()
        if "," in text:  # "0,1": GPU indices
            return len([part for part in text.split(",") if part.strip()])
        if text == "auto":
            return 1 if trainer_cfg.accelerator == "cpu" else None
        devices = int(text) if text.lstrip("-").isdigit() else None
    if isinstance(devices, int):
        return devices if devices > 0 else None
    return len(devices) if devices is not None else None  # a list of GPU indices


def world_size(trainer_cfg) -> int | None:
    """Ranks in all: devices per node x nodes (None when the machine decides the device count)."""
    per_node = devices_per_node(trainer_cfg)
    return None if per_node is None else per_node * trainer_cfg.num_nodes


def slurm_manages_tasks() -> bool:
    """SLURM started this process as one of its tasks (Lightning's SLURMEnvironment.detect rule)."""
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in (
        "bash",
        "interactive",
    )


def launched_externally() -> bool:
    """Every rank was started by the cluster (srun, torchrun), not by normlab's launcher."""
    elastic = all(
        key in os.environ for key in ("RANK", "GROUP_RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    )
    return slurm_manages_tasks() or elastic


def launch_rank(trainer_cfg) -> int:
    """This process's global rank as its launcher announced it; 0 in a plain run and in the process
    that starts the other ranks of its node."""
    if slurm_manages_tasks():
        return int(os.environ.get("SLURM_PROCID", 0))
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))
    return node * (devices_per_node(trainer_cfg) or 1) + int(os.environ.get("LOCAL_RANK", 0))


def is_global_zero(trainer_cfg) -> bool:
    """Whether this process keeps the run's books (run folder, result.json, sweep cell state)."""
    return launch_rank(trainer_cfg) == 0


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


def threads_per_rank(trainer_cfg) -> int | None:
    """Torch threads when this node's ranks share its cores (normlab starts them), else None.

    Two 2-thread processes on 2 cores ran 8-11x slower each than two 1-thread ones (measured).
    Under SLURM or torchrun each task has cores of its own, so the usual policy applies.
    """
    per_node = devices_per_node(trainer_cfg) or 1
    if per_node == 1 or launched_externally():
        return None
    return max(1, available_cores() // (parallel_jobs() * per_node))


def check_distributed(cfg) -> None:
    """Multi-device settings that cannot work, each as a one-line ConfigError."""
    trainer, norm, batch = cfg.trainer, cfg.norm, cfg.data.batch_size
    world = world_size(trainer)
    if trainer.strategy.startswith("ddp") and trainer.strategy not in _MULTI_PROCESS_STRATEGIES:
        raise ConfigError(
            f"trainer.strategy={trainer.strategy}: normlab starts ranks itself; use "
            "trainer=ddp (GPUs) or trainer=ddp_cpu (CPU processes), strategy ddp"
        )
    if world is not None and batch % world:
        multiple = batch - batch % world or world
        raise ConfigError(
            f"data.batch_size={batch} is the global batch and must split evenly over "
            f"{world} ranks (trainer.devices x trainer.num_nodes); use a multiple of "
            f"{world}, e.g. {multiple}"
        )
    ghosts = norm.ghost_batches
    if ghosts == 1:
        return
    if norm.name != "batch":
        raise ConfigError(
            f"norm.ghost_batches={ghosts} applies to norm=batch only (norm={norm.name})"
        )
    if (world or 1) > 1 and norm.sync:
        raise ConfigError(
            f"norm.ghost_batches={ghosts} splits each device's batch, norm.sync=true "
            "joins the devices' batches; set norm.sync=false or norm.ghost_batches=1"
        )
    per_device = batch // (world or 1)
    if per_device % ghosts:
        raise ConfigError(
            f"norm.ghost_batches={ghosts} does not divide the per-device batch of "
            f"{per_device} (data.batch_size={batch}); pick a divisor of {per_device}"
        )


def distributed_kwargs(cfg) -> dict[str, Any]:
    """Trainer arguments of a multi-process run: normlab's DDP strategy and, with `norm.sync`,
    batch norms synchronized across ranks. Empty for a single process."""
    strategy = cfg.trainer.strategy
    if not (strategy == "ddp" or (strategy == "auto" and world_size(cfg.trainer) != 1)):
        return {}
    from normlab.lit.ddp import BatchNormSync, NormlabDDPStrategy

    return {
        "strategy": NormlabDDPStrategy(cfg),
        "plugins": [BatchNormSync()] if cfg.norm.sync else [],
    }


def batch_layout(trainer, cfg) -> dict[str, Any]:
    """How the global batch was split, for result.json."""
    world = trainer.world_size
    environment = getattr(trainer.strategy, "cluster_environment", None)
    return {
        "world_size": world,
        "per_device_batch_size": cfg.data.batch_size // world,
        "norm_sync": bool(world > 1 and cfg.norm.sync),
        "cluster": type(environment).__name__ if environment is not None else None,
    }


def finish_distributed(trainer) -> None:
    """Leave the process group; rank 0 also waits for the ranks it started and restores its
    environment, so the next cell of a sweep starts a fresh group."""
    release = getattr(trainer.strategy, "release", None)
    if release is not None:
        release()
