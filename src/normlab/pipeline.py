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
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ProgressBar
from pytorch_lightning.utilities.exceptions import SIGTERMException

from normlab.callbacks.build import build_callbacks
from normlab.callbacks.pruning import Pruned
from normlab.config.validate import validate
from normlab.data.datamodule import build_datamodule
from normlab.lit.build import build_module
from normlab.lit.ddp import batch_layout, distributed_kwargs, finish_distributed
from normlab.lit.module import Diverged
from normlab.lit.step_plan import StepPlan
from normlab.models.build import seeded_network
from normlab.paths import REPO_DIR, last_checkpoint
from normlab.stack.loggers import MemberLoggers, member_metrics
from normlab.stack.network import MemberRandomness, MemberStack
from normlab.utils.files import write_json_atomic, write_text_atomic
from normlab.utils.loggers import build_loggers, finish_wandb
from normlab.utils.metrics_csv import checkpoint_step, merge_metrics, set_aside_metrics
from normlab.utils.provenance import write_provenance
from normlab.utils.ranks import is_global_zero
from normlab.utils.seeding import run_seeds
from normlab.utils.slurm import (
    lightning_cluster_plugins,
    preemption_requeue,
    set_aside_hpc_checkpoints,
)
from normlab.utils.threads import apply_thread_policy, threads_per_rank
from normlab.utils.user_code import user_code

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
    kwargs.pop("process_group_timeout_s")  # the DDP strategy's (distributed_kwargs)
    kwargs.update(distributed_kwargs(cfg))
    cluster = lightning_cluster_plugins()  # under SLURM: Lightning's auto-requeue off
    if cluster:
        kwargs["plugins"] = [*kwargs.get("plugins", []), *cluster]
    return kwargs


def _has_progress_bar(callbacks: Sequence[pl.Callback]) -> bool:
    return any(isinstance(callback, ProgressBar) for callback in callbacks)


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
    """Train and test the configurations `cfgs` together as one stack (normlab.stack; one
    config: a solo run), each writing its own run folder; return each member's result.json.

    The members share what the stack key says they share (data, model shape, batch size,
    steps, trainer: the first config's); the stack's checkpoint lives in `stack_dir`.
    """
    started = time.time()
    for cfg in cfgs:
        validate(cfg)
    _quiet_lightning()
    lead, stacked = cfgs[0], len(cfgs) > 1
    rank_zero = is_global_zero(lead.trainer)  # the other ranks of a multi-device run write nothing
    resolved = [OmegaConf.to_container(cfg, resolve=True, enum_to_str=True) for cfg in cfgs]
    seeds = [run_seeds(cfg) for cfg in cfgs]
    threads = apply_thread_policy(lead.threads or threads_per_rank(lead.trainer))
    for member, (cfg, run_dir, seed) in enumerate(zip(cfgs, run_dirs, seeds, strict=True)):
        run_dir.mkdir(parents=True, exist_ok=True)
        if rank_zero:
            write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
            stack = (
                {"dir": str(stack_dir), "members": len(cfgs), "member": member} if stacked else None
            )
            write_provenance(
                run_dir,
                REPO_DIR,
                threads,
                {"seed": cfg.seed, "init": seed.init, "data": seed.data},
                stack,
                user_code(cfg),
            )

    datamodule = build_datamodule(
        lead.data,
        Path(lead.paths.data_dir),
        [seed.data for seed in seeds],
        plan=StepPlan.from_config(lead),
    )
    datamodule.setup()
    shape, classes = datamodule.input_shape, datamodule.num_classes
    networks = [
        seeded_network(cfg, shape, classes, seed.init)
        for cfg, seed in zip(cfgs, seeds, strict=True)
    ]
    if lead.compile:
        # the wrapper shares the parameters; instruments reach the eager network as `_orig_mod`
        networks = [torch.compile(network) for network in networks]
    model = MemberStack(networks, MemberRandomness([seed.data for seed in seeds]))
    module = build_module(cfgs, model, classes, shape, resolved if stacked else resolved[0])
    # dropout and augmentation draws come from the data seed, independent of the init seed
    # (a stack's members draw from their own streams: normlab.stack.network.MemberRandomness)
    pl.seed_everything(seeds[0].data, verbose=False)

    checkpoint = last_checkpoint(stack_dir)
    resume_from = checkpoint if checkpoint.is_file() else None
    resumed_at = checkpoint_step(checkpoint) if resume_from else None
    earlier_metrics = (
        [set_aside_metrics(run_dir, resumed_at) for run_dir in run_dirs]
        if resume_from and rank_zero
        else None
    )
    member_loggers = [
        build_loggers(
            cfg.logger,
            run_dir,
            run_dir.name,
            cfg.name,
            list(cfg.tags),
            config,
            resumed_at,
            earlier_metrics[member] if earlier_metrics is not None else None,
            requirements=member == 0,
        )
        for member, (cfg, run_dir, config) in enumerate(zip(cfgs, run_dirs, resolved, strict=True))
    ]
    loggers = [MemberLoggers(member_loggers)] if stacked else member_loggers[0]
    callbacks = [*build_callbacks(lead, stack_dir, cfgs), *extra_callbacks]
    set_aside_hpc_checkpoints(stack_dir)
    requeue = preemption_requeue()  # before the fit, which takes the signals
    trainer = pl.Trainer(
        **{
            **trainer_kwargs(lead),
            # a progress bar from callbacks.extra (callbacks=progress) turns the bar on
            **({"enable_progress_bar": True} if _has_progress_bar(callbacks) else {}),
        },
        logger=loggers or False,
        callbacks=callbacks,
        # without this, callbacks.checkpoint=false still got Lightning's default checkpoint
        enable_checkpointing=lead.callbacks.checkpoint,
        default_root_dir=str(stack_dir),
    )
    status, tested, problem = "completed", {}, {}
    try:
        if resume_from:
            log.info("resuming from %s", resume_from)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
        tested = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    except Diverged as exc:  # a solo run (a stack's diverged members: module.diverged)
        status, problem = "diverged", {"error": str(exc), "diverged_at_step": exc.step}
        log.error("diverged: %s", exc)
    except Pruned as exc:  # an Optuna search trial stopped by its study's pruner
        status, problem = "pruned", {"error": str(exc), "pruned_at_step": exc.step}
        log.info("%s", exc)
    except SIGTERMException as exc:  # SIGTERM, USR1 or USR2: normlab.callbacks.preemption
        name = getattr(exc, "signal_name", "SIGTERM")
        status, problem = (
            "preempted",
            {"error": f"{name}: checkpoint saved; requeued under SLURM, else re-run to resume"},
        )
        log.warning("preempted at step %d; checkpoint saved to %s", trainer.global_step, checkpoint)
    finally:
        for own in member_loggers:
            finish_wandb(own, exit_code=0 if status == "completed" else 1)
        if earlier_metrics is not None:
            for run_dir, rows in zip(run_dirs, earlier_metrics, strict=True):
                merge_metrics(run_dir / "metrics.csv", rows)
        finish_distributed(trainer)
    results = []
    for member, (cfg, run_dir) in enumerate(zip(cfgs, run_dirs, strict=True)):
        outcome, details, steps = status, problem, trainer.global_step
        own_tests = member_metrics(tested, member, len(cfgs))
        if member in module.stopped:  # early stopping: the run ended at that validation
            steps = module.stopped[member]
        if member in module.diverged:
            step, loss = module.diverged[member]
            outcome, own_tests, steps = "diverged", {}, step + 1
            details = {"error": f"training loss {loss} at step {step}", "diverged_at_step": step}
        result = {
            "status": outcome,
            **details,
            **{key: float(value) for key, value in own_tests.items()},
            "val/acc_best": module.best_val_acc(member),
            "steps": steps,
            "resumed_from_step": resumed_at,
            "wall_time_s": round(time.time() - started, 2),
            "seed": cfg.seed,
            "data": datamodule.dataset_name,
            "run_dir": str(run_dir),
            **batch_layout(trainer, cfg),
        }
        if rank_zero:
            write_json_atomic(run_dir / "result.json", result)
        results.append(result)
    if status == "preempted":
        requeue()  # every file is closed and written: under SLURM the job goes back in the queue
    return results
