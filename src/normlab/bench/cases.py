"""The benchmarked cases. Each trains the same config (same model, data, batches, optimizer,
steps and validation cadence) and returns its LoopMeter measurement."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from normlab.bench.timer import LoopMeter, LoopTimer
from normlab.config.resolvers import register_resolvers
from normlab.config.schema import register_schemas
from normlab.data.batches import ResidentBatches
from normlab.data.datamodule import ResidentDataModule
from normlab.models.build import build_model
from normlab.models.initialization import initialize
from normlab.paths import CONFIG_DIR
from normlab.utils.seeding import run_seeds
from normlab.utils.threads import apply_thread_policy

LABELS = {
    "raw": "(a) raw PyTorch loop",
    "normlab": "(b) normlab default: CSV + W&B offline",
    "instruments": "(c) normlab + instruments",
    "template": "(d) template: DataLoader, per-step log",
}
# what each normlab case adds to the shared overrides
NORMLAB_OVERRIDES = {"normlab": ["logger=wandb"],
                     "instruments": ["logger=wandb", "callbacks=instruments"]}


def compose_config(overrides: list[str]) -> DictConfig:
    """normlab's `train` config with `overrides`, composed as the CLI would."""
    register_schemas()
    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def raw_loop(cfg: DictConfig) -> dict[str, Any]:
    """The reference: normlab's model factories and resident batches, a bare SGD loop."""
    apply_thread_policy(cfg.threads)
    seeds = run_seeds(cfg)
    data = ResidentDataModule(cfg.data, Path(cfg.paths.data_dir), seeds.data)
    data.setup()
    torch.manual_seed(seeds.init)
    model = build_model(cfg, data.input_shape, data.num_classes)
    initialize(model, instantiate(cfg.init.weight), instantiate(cfg.init.bias))
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    batches = ResidentBatches(*data.tensors["train"], cfg.data.batch_size, shuffle=True,
                              drop_last=True, seed=seeds.data)
    steps, every = cfg.trainer.max_steps, cfg.trainer.val_check_interval
    val_acc, step = None, 0
    meter = LoopMeter()
    meter.start()
    while step < steps:
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % every == 0:
                val_acc = accuracy(model, *data.tensors["val"], cfg.data.eval_batch_size)
            if step == steps:
                break
        batches.set_epoch(batches.epoch + 1)
    meter.stop(step, val_acc)
    return meter.measured


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Eval-mode accuracy over (x, y) in chunks, as the Lightning cases validate."""
    model.eval()
    correct = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(y), batch_size))
    model.train()
    return correct / len(y)


def normlab_run(cfg: DictConfig) -> dict[str, Any]:
    """The real `normlab.pipeline.train`, in a throw-away run folder, with a loop timer."""
    from normlab.pipeline import train

    timer = LoopTimer()
    with tempfile.TemporaryDirectory(prefix="normlab-bench-") as run_dir:
        result = train(cfg, Path(run_dir) / "run", extra_callbacks=[timer])
    if result["status"] != "completed":
        raise RuntimeError(f"benchmark run {result['status']}: {result.get('error')}")
    return timer.meter.measured


def template_run(cfg: DictConfig) -> dict[str, Any]:
    """The common Lightning template on the same model and data (see normlab.bench.template)."""
    from normlab.bench.template import train_template

    return train_template(cfg)


def run_case(case: str, steps: int, threads: int | None) -> dict[str, Any]:
    """Train `case` for `steps` steps; its measurement (loop seconds, steps, val accuracy)."""
    overrides = [f"trainer.max_steps={steps}", *NORMLAB_OVERRIDES.get(case, [])]
    if threads is not None:
        overrides.append(f"threads={threads}")
    runners: dict[str, Callable[[DictConfig], dict[str, Any]]] = {
        "raw": raw_loop, "normlab": normlab_run, "instruments": normlab_run,
        "template": template_run}
    return runners[case](compose_config(overrides))
