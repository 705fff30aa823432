"""The common Lightning template, for comparison: a DataLoader over a TensorDataset, torchmetrics
objects updated and `self.log`-ed at every step, the progress bar and Lightning's defaults."""

from __future__ import annotations

import tempfile
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from normlab.bench.setup import data_and_network, same_schedule
from normlab.bench.timer import LoopTimer


class TemplateModule(pl.LightningModule):
    """Per-step metric objects and `self.log(..., prog_bar=True)`, as the usual examples do."""

    def __init__(self, model: nn.Module, optimizer_factory: Any, num_classes: int):
        super().__init__()
        self.model, self.optimizer_factory = model, optimizer_factory
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        self.train_loss(loss)
        self.train_acc(logits, y)
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        self.val_loss(F.cross_entropy(logits, y))
        self.val_acc(logits, y)
        self.log("val/loss", self.val_loss, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())


def train_template(cfg: DictConfig) -> dict[str, Any]:
    """Train the template on `cfg`'s model and data; its LoopMeter measurement."""
    data, model, _ = data_and_network(cfg)
    module = TemplateModule(model, instantiate(cfg.optimizer), data.num_classes)
    train = DataLoader(
        TensorDataset(*data.tensors["train"]),
        batch_size=cfg.data.batch_size,
        shuffle=True,
        drop_last=True,
    )
    val = DataLoader(TensorDataset(*data.tensors["val"]), batch_size=cfg.data.eval_batch_size)
    timer = LoopTimer()
    with tempfile.TemporaryDirectory(prefix="normlab-bench-") as run_dir:
        trainer = pl.Trainer(
            **same_schedule(cfg),
            logger=CSVLogger(run_dir, name="", version=""),
            callbacks=[timer],
            default_root_dir=run_dir,
        )
        trainer.fit(module, train, val)
    return timer.meter.measured
