"""Multi-device settings that cannot work, each found before training as a one-line error."""

from __future__ import annotations

from normlab.config.errors import ConfigError
from normlab.utils.ranks import per_device_batch, world_size

# Strategies that start their ranks in ways normlab's run folders do not survive (ddp_spawn:
# results stay in the spawned processes; Lightning's plain ddp: children re-run the command).
_MULTI_PROCESS_STRATEGIES = ("auto", "ddp")


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
    ghosts = norm.get("ghost_batches", 1)  # norm=batch's setting
    if ghosts == 1:
        return
    if (world or 1) > 1 and norm.sync:
        raise ConfigError(
            f"norm.ghost_batches={ghosts} splits each device's batch, norm.sync=true "
            "joins the devices' batches; set norm.sync=false or norm.ghost_batches=1"
        )
    per_device = per_device_batch(trainer, batch) or batch
    if per_device % ghosts:
        raise ConfigError(
            f"norm.ghost_batches={ghosts} does not divide the per-device batch of "
            f"{per_device} (data.batch_size={batch}); pick a divisor of {per_device}"
        )
