"""Train and test composed configurations, filling their run folders.

A run trains M members at once (normlab.models.members; a solo run is M = 1): each has its own
config and run folder, the members share the data, the model shape and the trainer (the stack
key of normlab.stack.plan). Run folder (Hydra's output dir): .hydra/ (composed config,
overrides), config.yaml (resolved), provenance.json, metrics.csv, checkpoints/last.ckpt (a
stack's: in its stack folder), wandb/ (logger=wandb), result.json.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ProgressBar
from pytorch_lightning.utilities.exceptions import SIGTERMException

from normlab.callbacks.build import build_callbacks
from normlab.callbacks.pruning import Pruned
from normlab.config.bounds import SEED_KEYS, check_seeds
from normlab.config.errors import ConfigError
from normlab.config.validate import validate
from normlab.data.datamodule import build_datamodule
from normlab.lit.build import build_module
from normlab.lit.ddp import batch_layout, distributed_kwargs, finish_distributed
from normlab.lit.module import ClassifierModule
from normlab.models.build import seeded_network
from normlab.models.member_randomness import MemberRandomness
from normlab.models.members import MemberNetworks
from normlab.paths import REPO_DIR, last_checkpoint
from normlab.utils.files import write_json_atomic, write_text_atomic
from normlab.utils.loggers import build_loggers, finish_wandb
from normlab.utils.member_loggers import MemberLoggers
from normlab.utils.metrics_csv import checkpoint_step, merge_metrics, set_aside_metrics
from normlab.utils.provenance import write_provenance
from normlab.utils.ranks import is_global_zero
from normlab.utils.seeding import RunSeeds, run_seeds
from normlab.utils.slurm import (
    lightning_cluster_plugins,
    preemption_requeue,
    set_aside_hpc_checkpoints,
)
from normlab.utils.threads import apply_thread_policy, threads_per_rank
from normlab.utils.user_code import user_code

log = logging.getLogger("normlab")
LOGGER_THREADS = 4  # members' W&B runs opened at once
# config.yaml as OmegaConf.to_yaml writes it, through libyaml's dumper where PyYAML has it
YAML_STYLE = {
    "Dumper": getattr(yaml, "CSafeDumper", yaml.SafeDumper),
    "sort_keys": False,
    "default_flow_style": False,
    "allow_unicode": True,
}


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
    kwargs.pop("process_group_timeout_s")  # the DDP strategy's (distributed_kwargs)
    kwargs.update(distributed_kwargs(cfg))
    cluster = lightning_cluster_plugins()  # under SLURM: Lightning's auto-requeue off
    if cluster:
        kwargs["plugins"] = [*kwargs.get("plugins", []), *cluster]
    return kwargs


def train(
    cfg: DictConfig, run_dir: Path, extra_callbacks: Sequence[pl.Callback] = ()
) -> dict[str, Any]:
    """Train and test one configuration; write the run folder; return result.json's content.

    `extra_callbacks` join the configured ones (the benchmark's loop timer uses this).
    """
    return train_members([cfg], [run_dir], run_dir, extra_callbacks)[0]


def train_members(
    cfgs: Sequence[DictConfig],
    run_dirs: Sequence[Path],
    stack_dir: Path,
    extra_callbacks: Sequence[pl.Callback] = (),
) -> list[dict[str, Any]]:
    """Train and test the configurations `cfgs` together, one member each, each writing its own
    run folder; return each member's result.json. The run's checkpoint lives in `stack_dir`
    (a solo run's: its own folder)."""
    started = time.time()
    resolved = [OmegaConf.to_container(cfg, resolve=True, enum_to_str=True) for cfg in cfgs]
    _validate_members(cfgs, resolved)
    _quiet_lightning()
    lead = cfgs[0]
    rank_zero = is_global_zero(lead.trainer)  # the other ranks of a multi-device run write nothing
    seeds = [run_seeds(cfg) for cfg in cfgs]
    threads = apply_thread_policy(lead.threads or threads_per_rank(lead.trainer))
    if rank_zero:
        _write_run_folders(cfgs, resolved, run_dirs, stack_dir, seeds, threads)
    datamodule = build_datamodule(lead.data, Path(lead.paths.data_dir), [s.data for s in seeds])
    datamodule.setup()
    checkpoint = last_checkpoint(stack_dir)
    resumed_at = checkpoint_step(checkpoint) if checkpoint.is_file() else None
    earlier_rows = (
        [set_aside_metrics(run_dir, resumed_at) for run_dir in run_dirs]
        if resumed_at is not None and rank_zero
        else None
    )
    with ThreadPoolExecutor(LOGGER_THREADS) as pool:
        # each member's W&B run starts while the networks are built: a run's start waits on
        # W&B's service process for much of its time, which threads and the build overlap
        opening = [
            pool.submit(
                build_loggers,
                cfg.logger,
                run_dir,
                run_dir.name,
                cfg.name,
                list(cfg.tags),
                config,
                resumed_at,
                earlier_rows[member] if earlier_rows is not None else None,
                requirements=member == 0,
            )
            for member, (cfg, run_dir, config) in enumerate(
                zip(cfgs, run_dirs, resolved, strict=True)
            )
        ]
        module = _build_module(cfgs, seeds, datamodule, resolved)
        member_loggers = _opened(opening)
    trainer = _build_trainer(lead, cfgs, stack_dir, member_loggers, extra_callbacks)
    requeue = preemption_requeue()  # before the fit, which takes the signals
    status, problem = "completed", {}
    try:
        if resumed_at is not None:
            log.info("resuming from %s", checkpoint)
        trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint if resumed_at else None)
        trainer.test(module, datamodule=datamodule, verbose=False)
    except Pruned as exc:  # an Optuna search trial stopped by its study's pruner
        status, problem = "pruned", {"error": str(exc), "pruned_at_step": exc.step}
        log.info("%s", exc)
    except SIGTERMException as exc:  # SIGTERM, USR1 or USR2: normlab.callbacks.preemption
        name = getattr(exc, "signal_name", "SIGTERM")
        status, problem = (
            "preempted",
            {
                "error": f"{name}: checkpoint saved; requeued under SLURM, else re-run to resume",
                "signal": name,
            },
        )
        log.warning("preempted at step %d; checkpoint saved to %s", trainer.global_step, checkpoint)
    finally:
        for own in member_loggers:
            finish_wandb(own, exit_code=0 if status == "completed" else 1)
        if earlier_rows is not None:
            for run_dir, rows in zip(run_dirs, earlier_rows, strict=True):
                merge_metrics(run_dir / "metrics.csv", rows)
        finish_distributed(trainer)
    results = _results(module, trainer, cfgs, run_dirs, status, problem, started, resumed_at)
    if rank_zero:
        for run_dir, result in zip(run_dirs, results, strict=True):
            write_json_atomic(run_dir / "result.json", result)
    if status == "preempted":
        # every file is closed and written: under SLURM the job goes back in the queue. Should
        # the requeue fail, the cells stay `preempted` (normlab.sweep.record_failure): a re-run
        # resumes them from their checkpoint with every row written so far
        requeue()
    return results


def _opened(opening: Sequence[Future]) -> list[list]:
    """Each member's loggers, once all have opened."""
    return [future.result() for future in opening]


def _validate_members(cfgs: Sequence[DictConfig], resolved: Sequence[dict]) -> None:
    """Every member's config checked (ConfigError on the first mistake). Members whose configs
    differ only in their seeds share one full check: a seed's one rule is its bound."""
    precision = str(cfgs[0].trainer.precision)
    if len(cfgs) > 1 and precision.startswith("16"):
        raise ConfigError(
            f"trainer.precision={precision}: one loss scale for several members would skip "
            "every member's step on one member's overflow; train such cells one at a time "
            "(the stacked launcher does)"
        )
    checked: set[str] = set()
    for cfg, tree in zip(cfgs, resolved, strict=True):
        key = json.dumps({k: v for k, v in tree.items() if k not in SEED_KEYS}, sort_keys=True)
        if key in checked:
            check_seeds(cfg)
        else:
            validate(cfg)
            checked.add(key)


def _write_run_folders(
    cfgs, resolved, run_dirs, stack_dir: Path, seeds: Sequence[RunSeeds], threads: int
) -> None:
    """Each member's config.yaml (resolved) and provenance.json (which names its stack, if
    any)."""
    stacked = len(cfgs) > 1
    for member, (cfg, tree, run_dir, seed) in enumerate(
        zip(cfgs, resolved, run_dirs, seeds, strict=True)
    ):
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", yaml.dump(tree, **YAML_STYLE))
        stack = {"dir": str(stack_dir), "members": len(cfgs), "member": member} if stacked else None
        seeds_record = {"seed": cfg.seed, "init": seed.init, "data": seed.data}
        write_provenance(
            run_dir,
            REPO_DIR,
            threads,
            seeds_record,
            stack,
            user_code(cfg),
            accelerator=cfg.trainer.accelerator,
        )


def _build_module(cfgs, seeds: Sequence[RunSeeds], datamodule, resolved) -> ClassifierModule:
    """Every member's network (its own initial weights), as one MemberNetworks, in the module
    that trains them."""
    shape, classes = datamodule.input_shape, datamodule.num_classes
    networks = [
        seeded_network(cfg, shape, classes, seed.init)
        for cfg, seed in zip(cfgs, seeds, strict=True)
    ]
    model = MemberNetworks(networks, MemberRandomness([seed.data for seed in seeds]))
    if cfgs[0].compile:
        model.compile_forward()
    config = resolved if len(cfgs) > 1 else resolved[0]
    module = build_module(cfgs, model, classes, shape, config)
    # draws from the global generator (a network trained through its own forward, noisy batch
    # norm) come from the data seed, as every member's own stream does
    pl.seed_everything(seeds[0].data, verbose=False)
    return module


def _build_trainer(lead, cfgs, stack_dir: Path, member_loggers, extra_callbacks) -> pl.Trainer:
    """The Trainer of `lead`'s trainer group, with the run's callbacks and its one logger."""
    callbacks = [*build_callbacks(lead, stack_dir, cfgs), *extra_callbacks]
    set_aside_hpc_checkpoints(stack_dir)
    has_bar = any(isinstance(callback, ProgressBar) for callback in callbacks)
    return pl.Trainer(
        **{
            **trainer_kwargs(lead),
            # a progress bar from callbacks.extra (callbacks=progress) turns the bar on
            **({"enable_progress_bar": True} if has_bar else {}),
        },
        logger=MemberLoggers(member_loggers) if any(member_loggers) else False,
        callbacks=callbacks,
        # without this, callbacks.checkpoint=false still got Lightning's default checkpoint
        enable_checkpointing=lead.callbacks.checkpoint,
        default_root_dir=str(stack_dir),
    )


def _results(module, trainer, cfgs, run_dirs, status, problem, started, resumed_at) -> list[dict]:
    """Each member's result.json: the run's status (a member's own divergence wins), its test
    metrics, steps, seed and where it ran."""
    results = []
    for cfg, run_dir, outcome in zip(cfgs, run_dirs, module.member_results(), strict=True):
        if status != "completed" and outcome["status"] == "completed":
            outcome = {k: v for k, v in outcome.items() if not k.startswith("test/")}
            outcome = {**outcome, **problem, "status": status}
        results.append(
            {
                **outcome,
                "resumed_from_step": resumed_at,
                "wall_time_s": round(time.time() - started, 2),
                "seed": cfg.seed,
                "data": trainer.datamodule.dataset_name if trainer.datamodule else None,
                "run_dir": str(run_dir),
                **batch_layout(trainer, cfg),
            }
        )
    return results
