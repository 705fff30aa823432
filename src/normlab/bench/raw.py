"""The reference: a hand-written PyTorch loop on normlab's model factories and resident batches."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from normlab.bench.setup import data_and_network
from normlab.bench.timer import LoopMeter
from normlab.data.batches import ResidentBatches


def train_raw(cfg: DictConfig) -> dict[str, Any]:
    """SGD steps with no logging, validating at the trainer's cadence; its LoopMeter measurement.

    Same seeds as normlab's pipeline, so the weights and the batch order are the same too.
    """
    data, model, seeds = data_and_network(cfg)
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    batches = ResidentBatches(
        *data.tensors["train"], cfg.data.batch_size, shuffle=True, drop_last=True, seed=seeds.data
    )
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
    """Eval-mode accuracy over (x, y) in chunks of `batch_size`."""
    model.eval()
    correct = sum(
        int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
        for i in range(0, len(y), batch_size)
    )
    model.train()
    return correct / len(y)
