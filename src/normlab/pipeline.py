"""Train and test one composed configuration, filling its run folder.

Run folder (Hydra's output dir): .hydra/ (composed config, overrides), config.yaml (resolved),
provenance.json, metrics.csv, checkpoints/last.ckpt, wandb/ (logger=wandb), result.json.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from normlab.callbacks.build import build_callbacks, last_checkpoint
from normlab.config.validate import validate
from normlab.data.datamodule import ResidentDataModule
from normlab.lit.build import build_module
from normlab.lit.module import Diverged
from normlab.lit.step_plan import StepPlan
from normlab.models.build import build_model
from normlab.models.initialization import initialize
from normlab.paths import REPO_DIR
from normlab.utils.distributed import (
    batch_layout,
    distributed_kwargs,
    finish_distributed,
    is_global_zero,
    threads_per_rank,
)
from normlab.utils.files import write_json_atomic, write_text_atomic
from normlab.utils.loggers import build_loggers, finish_wandb
from normlab.utils.metrics_csv import checkpoint_step, merge_metrics, set_aside_metrics
from normlab.utils.provenance import write_provenance
from normlab.utils.seeding import run_seeds
from normlab.utils.threads import apply_thread_policy

log = logging.getLogger("normlab")


def _quiet_lightning() -> None:
    """Drop start-up banners that repeat on every run and say nothing about this one."""
    for name in (
        "pytorch_lightning.utilities.rank_zero",
        "pytorch_lightning.accelerators.cuda",
        "lightning_fabric.utilities.seed",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*Experiment logs directory.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")


def trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """`cfg.trainer` plus the distributed settings (gradient clipping is the module's)."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs = {
        key: value
        for key, value in kwargs.items()
        if value is not None or key == "check_val_every_n_epoch"
    }
    kwargs.update(distributed_kwargs(cfg))
    return kwargs


def train(
    cfg: DictConfig, run_dir: Path, extra_callbacks: Sequence[pl.Callback] = ()
) -> dict[str, Any]:
    """Train and test one configuration; write the run folder; return result.json's content.

    `extra_callbacks` join the configured ones (the benchmark's loop timer uses this).
    """
    started = time.time()
    validate(cfg)
    _quiet_lightning()
    rank_zero = is_global_zero(cfg.trainer)  # the other ranks of a multi-device run write nothing
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    if rank_zero:
        write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    seeds = run_seeds(cfg)
    threads = apply_thread_policy(cfg.threads or threads_per_rank(cfg.trainer))
    if rank_zero:
        write_provenance(
            run_dir, REPO_DIR, threads, {"seed": cfg.seed, "init": seeds.init, "data": seeds.data}
        )

    datamodule = ResidentDataModule(
        cfg.data, Path(cfg.paths.data_dir), seeds.data, plan=StepPlan.from_config(cfg)
    )
    datamodule.setup()
    pl.seed_everything(seeds.init, verbose=False)
    network = build_model(cfg, datamodule.input_shape, datamodule.num_classes)
    initialize(network, instantiate(cfg.init.weight), instantiate(cfg.init.bias))
    if cfg.compile:
        # the wrapper shares the parameters; instruments reach the eager network as `_orig_mod`
        network = torch.compile(network)
    module = build_module(cfg, network, datamodule.num_classes, datamodule.input_shape, resolved)
    # dropout and augmentation draws come from the data seed, independent of the init seed
    pl.seed_everything(seeds.data, verbose=False)

    checkpoint = last_checkpoint(run_dir)
    resume_from = checkpoint if checkpoint.is_file() else None
    resumed_at = checkpoint_step(checkpoint) if resume_from else None
    earlier_metrics = set_aside_metrics(run_dir, resumed_at) if resume_from and rank_zero else None
    loggers = build_loggers(cfg.logger, run_dir, run_dir.name, cfg.name, list(cfg.tags), resolved)
    trainer = pl.Trainer(
        **trainer_kwargs(cfg),
        logger=loggers or False,
        callbacks=[*build_callbacks(cfg, run_dir), *extra_callbacks],
        # without this, callbacks.checkpoint=false still got Lightning's default checkpoint
        enable_checkpointing=cfg.callbacks.checkpoint,
        default_root_dir=str(run_dir),
    )
    status, tested, problem = "completed", {}, {}
    try:
        if resume_from:
            log.info("resuming from %s", resume_from)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
        tested = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    except Diverged as exc:
        status, problem = "diverged", {"error": str(exc), "diverged_at_step": exc.step}
        log.error("diverged: %s", exc)
    except SIGTERMException:
        status, problem = (
            "preempted",
            {"error": "SIGTERM: checkpoint saved; re-run the same command to resume"},
        )
        log.warning("preempted at step %d; checkpoint saved to %s", trainer.global_step, checkpoint)
    finally:
        finish_wandb(loggers, exit_code=0 if status == "completed" else 1)
        if earlier_metrics is not None:
            merge_metrics(run_dir / "metrics.csv", earlier_metrics)
        finish_distributed(trainer)
    result = {
        "status": status,
        **problem,
        **{key: float(value) for key, value in tested.items()},
        "val/acc_best": module.best_val_acc(),
        "steps": trainer.global_step,
        "resumed_from_step": resumed_at,
        "wall_time_s": round(time.time() - started, 2),
        "seed": cfg.seed,
        "data": datamodule.dataset_name,
        "run_dir": str(run_dir),
        **batch_layout(trainer, cfg),
    }
    if rank_zero:
        write_json_atomic(run_dir / "result.json", result)
    return result
