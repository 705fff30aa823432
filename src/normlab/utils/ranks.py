"""Where this process stands in a multi-device run: world size, ranks, the per-device batch.

`data.batch_size` is the global batch: each of the `trainer.devices x trainer.num_nodes` ranks
trains on its contiguous share of every batch (`normlab.data.batches`), so a run on N devices
sees the same examples per step as a run on one. Only global rank 0 writes the run folder.
Nothing here imports Lightning: config checks run before the heavy imports.
"""

from __future__ import annotations

import os


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


def per_device_batch(trainer_cfg, batch_size: int) -> int | None:
    """Each rank's share of the global batch (None when only the machine knows the ranks)."""
    world = world_size(trainer_cfg)
    return None if world is None else batch_size // world


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


NCCL_ERROR_HANDLING_ENV = "TORCH_NCCL_ASYNC_ERROR_HANDLING"
# 2 (CleanUpOnly): when a collective fails or times out, torch's NCCL watchdog aborts the
# communicators and the error reaches the training loop, which fails the run (a sweep records
# the cell and goes on). torch's default, 3, ends the whole process from the watchdog thread:
# rank 0 of a sweep cell is the sweep's own process, so the sweep would die with the cell.
NCCL_ERROR_HANDLING = "2"


def set_nccl_error_handling() -> None:
    """Set TORCH_NCCL_ASYNC_ERROR_HANDLING for this process and the ranks it starts, unless
    the user set it (docs/distributed.md, "When a rank dies")."""
    os.environ.setdefault(NCCL_ERROR_HANDLING_ENV, NCCL_ERROR_HANDLING)
