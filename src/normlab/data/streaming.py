"""A user's LightningDataModule (data=custom), for data that does not fit in memory.

Its own loaders stream the batches: their batch size, transforms, workers and shuffling are
used as they are, so normlab's data.batch_size, data.preprocess and resident batches do not
apply, and it trains one network per run (a stack's members each need their own batch order
over tensors in memory). The first training batch is checked before training starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch

from normlab.config.errors import ConfigError
from normlab.data.errors import DataError


class StreamingDataModule(pl.LightningDataModule):
    """Hands Lightning the user's loaders; knows the input shape and class count normlab
    builds the network from."""

    def __init__(self, source: Any, cfg, order_seed: int | Sequence[int]):
        super().__init__()
        self.where = f"data._target_={cfg._target_}"
        if not isinstance(order_seed, int) and len(order_seed) > 1:
            raise ConfigError(
                f"{self.where}: a LightningDataModule streams one batch order, so it trains one "
                "network per run, not a stack; return (train, val, test) datasets to stack"
            )
        self.source = source
        self.num_classes = int(cfg.num_classes or source.num_classes)
        self.dataset_name = "custom"
        self.first_batch_shape: tuple[int, ...] | None = None
        self._prepared, self._stages = False, set()

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, read from the first training batch."""
        return self.first_batch_shape[1:]

    def prepare_data(self) -> None:
        """The user's prepare_data (downloads, say), once."""
        if not self._prepared and callable(getattr(self.source, "prepare_data", None)):
            self.source.prepare_data()
        self._prepared = True

    def setup(self, stage: str | None = None) -> None:
        """The user's setup, once per stage; the first time, check a training batch."""
        stage = stage or "fit"
        if stage not in self._stages:
            self.prepare_data()
            self.source.setup(stage)
            self._stages.add(stage)
        if self.first_batch_shape is None:
            self._check(next(iter(self.source.train_dataloader()), None))

    def _check(self, batch) -> None:
        if batch is None:
            raise DataError(f"{self.where}: its train_dataloader yields no batch")
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise DataError(
                f"{self.where}: its training batches are {type(batch).__name__}s; "
                "normlab needs (x, y) batches"
            )
        x, y = batch
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)) or x.ndim < 2:
            raise DataError(
                f"{self.where}: a training batch must be (x, y) tensors with the batch first; "
                f"got {type(x).__name__} and {type(y).__name__}"
            )
        if y.ndim != 1 or y.is_floating_point() or len(y) != len(x):
            raise DataError(
                f"{self.where}: the labels of a training batch are a {y.dtype} tensor of shape "
                f"{tuple(y.shape)}; give one integer class index per example"
            )
        outside = y[(y < 0) | (y >= self.num_classes)]
        if len(outside):
            raise DataError(
                f"{self.where}: a training batch has label {int(outside[0])}, outside "
                f"0..{self.num_classes - 1}; labels are class indices (data.num_classes)"
            )
        self.first_batch_shape = tuple(x.shape)

    def train_dataloader(self):
        return self.source.train_dataloader()

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Training batches with the member axis in front: a run of one member."""
        if self.trainer is not None and self.trainer.training:
            x, y = batch
            return x.unsqueeze(0), y.unsqueeze(0)
        return batch

    def val_dataloader(self):
        return self.source.val_dataloader()

    def test_dataloader(self):
        return self.source.test_dataloader()

    def state_dict(self) -> dict[str, Any]:
        """The user's data module state (saved in checkpoints, for a resume)."""
        return self.source.state_dict() if hasattr(self.source, "state_dict") else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the user's data module state."""
        if hasattr(self.source, "load_state_dict"):
            self.source.load_state_dict(state_dict)
