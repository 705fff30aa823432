"""Train and test one composed configuration, filling its run folder.

Run folder (Hydra's output dir): .hydra/ (composed config, overrides), config.yaml (resolved),
provenance.json, metrics.csv, checkpoints/last.ckpt, wandb/ (logger=wandb), result.json.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from normlab.config.validate import validate
from normlab.callbacks.build import build_callbacks
from normlab.data.datamodule import ResidentDataModule
from normlab.lit.build import build_module
from normlab.models.build import build_model
from normlab.models.initialization import initialize
from normlab.paths import REPO_DIR
from normlab.utils.files import write_json_atomic, write_text_atomic
from normlab.utils.loggers import build_loggers, finish_wandb
from normlab.utils.provenance import write_provenance
from normlab.utils.seeding import run_seeds
from normlab.utils.threads import apply_thread_policy

log = logging.getLogger("normlab")


def _quiet_lightning() -> None:
    """Drop start-up banners that repeat on every run and say nothing about this one."""
    for name in ("pytorch_lightning.utilities.rank_zero", "pytorch_lightning.accelerators.cuda",
                 "lightning_fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*_pytree.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")


def trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """`cfg.trainer` plus gradient clipping from the regularizer group."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs = {key: value for key, value in kwargs.items() if value is not None or key == "check_val_every_n_epoch"}
    clip = cfg.regularizer.get("grad_clip")
    if clip is not None:
        kwargs.update(gradient_clip_val=clip.value, gradient_clip_algorithm=clip.algorithm.value)
    return kwargs


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train and test one configuration; write the run folder; return result.json's content."""
    started = time.time()
    validate(cfg)
    _quiet_lightning()
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    seeds = run_seeds(cfg)
    threads = apply_thread_policy(cfg.threads)
    write_provenance(run_dir, REPO_DIR, threads, {"seed": cfg.seed, "init": seeds.init, "data": seeds.data})

    datamodule = ResidentDataModule(cfg.data, Path(cfg.paths.data_dir), seeds.data)
    datamodule.setup()
    pl.seed_everything(seeds.init, verbose=False)
    network = build_model(cfg, datamodule.input_shape, datamodule.num_classes)
    initialize(network, instantiate(cfg.init.weight), instantiate(cfg.init.bias))
    module = build_module(cfg, network, datamodule.num_classes, datamodule.input_shape, resolved)
    # dropout and augmentation draws come from the data seed, independent of the init seed
    pl.seed_everything(seeds.data, verbose=False)

    loggers = build_loggers(cfg.logger, run_dir, run_dir.name, cfg.name, list(cfg.tags), resolved)
    trainer = pl.Trainer(**trainer_kwargs(cfg), logger=loggers or False,
                         callbacks=build_callbacks(cfg, run_dir), default_root_dir=str(run_dir))
    try:
        trainer.fit(module, datamodule=datamodule)
        tested = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    finally:
        finish_wandb(loggers)
    result = {
        "status": "completed",
        **{key: float(value) for key, value in tested.items()},
        "val/acc_best": float(module.val_acc_best.compute()) if module.val_acc_best.update_called else None,
        "steps": trainer.global_step,
        "wall_time_s": round(time.time() - started, 2),
        "seed": cfg.seed,
        "run_dir": str(run_dir),
    }
    write_json_atomic(run_dir / "result.json", result)
    return result


def record_failure(run_dir: Path, error: str, status: str = "failed") -> None:
    """result.json for a run that did not complete, so sweeps and reports can list it."""
    write_json_atomic(run_dir / "result.json", {"status": status, "error": error})
