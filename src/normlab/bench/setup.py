"""The start every hand-built benchmark case shares with normlab's pipeline: threads, data and
the initialized network, built by normlab's own factories with the pipeline's seeds."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from torch import nn

from normlab.data.datamodule import ResidentDataModule
from normlab.models.build import seeded_network
from normlab.utils.seeding import RunSeeds, run_seeds
from normlab.utils.threads import apply_thread_policy


def data_and_network(cfg: DictConfig) -> tuple[ResidentDataModule, nn.Module, RunSeeds]:
    """Loaded data, the network with its initial weights (same as the pipeline's), the seeds."""
    apply_thread_policy(cfg.threads)
    seeds = run_seeds(cfg)
    data = ResidentDataModule(cfg.data, Path(cfg.paths.data_dir), seeds.data)
    data.setup()
    network = seeded_network(cfg, data.input_shape, data.num_classes, seeds.init)
    return data, network, seeds


def same_schedule(cfg: DictConfig) -> dict:
    """Trainer arguments every hand-built Lightning case shares with normlab's run: one CPU
    process, the same step budget and validation cadence (counted across epochs)."""
    return {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": cfg.trainer.max_steps,
        "val_check_interval": cfg.trainer.val_check_interval,
        "check_val_every_n_epoch": None,
    }
