"""`python -m normlab.train [overrides]`: compose the config, train, test, fill the run folder.

Run folder (Hydra's output dir): .hydra/ (composed config, overrides), config.yaml (resolved),
provenance.json, metrics.csv, checkpoints/last.ckpt, wandb/ (logger=wandb), result.json.
"""

from __future__ import annotations

import logging
import secrets
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from normlab.config.errors import ConfigError
from normlab.config.schema import register_schemas
from normlab.config.validate import validate
from normlab.callbacks.build import build_callbacks
from normlab.data.datamodule import ResidentDataModule
from normlab.data.errors import DataError
from normlab.lit.build import build_module
from normlab.models.build import build_model
from normlab.models.initialization import initialize
from normlab.paths import CONFIG_DIR, REPO_DIR
from normlab.utils.files import write_json_atomic, write_text_atomic
from normlab.utils.loggers import build_loggers, finish_wandb
from normlab.utils.provenance import write_provenance
from normlab.utils.seeding import run_seeds
from normlab.utils.threads import apply_thread_policy

log = logging.getLogger("normlab")

register_schemas()
# A short random id makes run folders started in the same second distinct. Cached, so every
# read of hydra.run.dir / hydra.sweep.dir in one process (and Hydra's copied sweep cache) agrees.
OmegaConf.register_new_resolver("uid", lambda: secrets.token_hex(3), use_cache=True, replace=True)


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
        kwargs.update(gradient_clip_val=clip.value, gradient_clip_algorithm=str(clip.algorithm))
    return kwargs


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train and test one configuration; write the run folder; return result.json's content."""
    started = time.time()
    validate(cfg)
    _quiet_lightning()
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
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
        "val/acc_best": float(module.val_acc_best.compute()) if trainer.global_step else None,
        "steps": trainer.global_step,
        "wall_time_s": round(time.time() - started, 2),
        "seed": cfg.seed,
        "run_dir": str(run_dir),
    }
    write_json_atomic(run_dir / "result.json", result)
    return result


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: one clear line and exit code 2 for a config or data error."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        result = train(cfg, run_dir)
    except (ConfigError, DataError) as exc:
        kind = "config" if isinstance(exc, ConfigError) else "data"
        write_json_atomic(run_dir / "result.json", {"status": "failed", "error": f"{kind}: {exc}"})
        if hydra_cfg.mode == RunMode.MULTIRUN:
            log.error("%s error: %s", kind, exc)  # recorded; the sweep goes on
            return None
        print(f"normlab: {kind} error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"test/acc={result['test/acc']:.4f} test/loss={result['test/loss']:.4f} "
          f"val/acc_best={result['val/acc_best']:.4f} steps={result['steps']} "
          f"time={result['wall_time_s']:.1f}s run_dir={run_dir}")
    return result["val/acc_best"]


if __name__ == "__main__":
    main()
