"""The Lightning floor: the least a LightningModule can do on normlab's resident batches (a loss,
SGD, validation accuracy; no logger, checkpoint, progress bar or metric objects). What is left
between it and the raw loop is Lightning's own per-step cost."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from normlab.bench.setup import data_and_network, same_schedule
from normlab.bench.timer import LoopTimer
from normlab.data.batches import ResidentBatches


class BareModule(pl.LightningModule):
    """Cross-entropy and the optimizer; validation accuracy as one number per validation."""

    def __init__(self, model: nn.Module, optimizer_factory: Any):
        super().__init__()
        self.model, self.optimizer_factory = model, optimizer_factory
        self.correct, self.seen = 0, 0

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self.correct += int((self.model(x).argmax(dim=1) == y).sum())
        self.seen += len(y)

    def on_validation_epoch_end(self) -> None:
        self.log("val/acc", self.correct / self.seen)
        self.correct, self.seen = 0, 0

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())


def train_floor(cfg: DictConfig) -> dict[str, Any]:
    """Train BareModule on `cfg`'s model and data; its LoopMeter measurement."""
    data, model, seeds = data_and_network(cfg)
    train = ResidentBatches(
        *data.tensors["train"], cfg.data.batch_size, shuffle=True, drop_last=True, seed=seeds.data
    )
    val = ResidentBatches(
        *data.tensors["val"], cfg.data.eval_batch_size, shuffle=False, drop_last=False
    )
    timer = LoopTimer()
    trainer = pl.Trainer(
        **same_schedule(cfg),
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(BareModule(model, instantiate(cfg.optimizer)), train, val)
    return timer.meter.measured
