"""LightningDataModule over resident tensors: load, split, preprocess once, slice batches."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from normlab.config.errors import ConfigError
from normlab.config.schema import DatasetName
from normlab.data.batches import MemberBatches, ResidentBatches
from normlab.data.custom import custom_source, streams
from normlab.data.datasets import dataset_option
from normlab.data.errors import DataError
from normlab.data.preprocess import Preprocessor
from normlab.data.sources import RawData
from normlab.data.streaming import StreamingDataModule

log = logging.getLogger(__name__)


def load_raw(cfg, data_dir: Path) -> tuple[RawData, str]:
    """Load `data.name` (or, when its files are absent, `data.fallback`); return it and its name."""
    try:
        return load_named(DatasetName(cfg.name), cfg, data_dir), DatasetName(cfg.name).value
    except DataError as exc:
        if cfg.get("fallback") is None:
            raise
        fallback = DatasetName(cfg.fallback)
        log.warning(
            "data=%s unavailable (%s); using data.fallback=%s",
            DatasetName(cfg.name).value,
            exc,
            fallback.value,
        )
        return load_named(fallback, cfg, data_dir), fallback.value


def load_named(name: DatasetName, cfg, data_dir: Path) -> RawData:
    """Load data set `name` with its entry's loader (normlab.data.datasets)."""
    return dataset_option(name).load(cfg, data_dir)


def build_datamodule(
    cfg, data_dir: Path, order_seed: int | Sequence[int]
) -> pl.LightningDataModule:
    """The data module of data config `cfg`: resident tensors (every built-in set, and data=custom
    datasets), or a data=custom LightningDataModule streaming its own batches."""
    if DatasetName(cfg.name) is DatasetName.custom and streams(cfg):
        return StreamingDataModule(custom_source(cfg), cfg, order_seed)
    return ResidentDataModule(cfg, data_dir, order_seed)


class ResidentDataModule(pl.LightningDataModule):
    """Train / val / test tensors held in memory, moved once to the training device.

    `order_seed`: the training batch order's seed, one per member: each member walks its own
    order over the same data (normlab.data.batches.MemberBatches).
    """

    def __init__(self, cfg, data_dir: Path, order_seed: int | Sequence[int]):
        super().__init__()
        self.cfg, self.data_dir = cfg, Path(data_dir)
        self.order_seeds = [order_seed] if isinstance(order_seed, int) else list(order_seed)
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.num_classes = 0
        self.dataset_name = DatasetName(cfg.name).value  # the fallback's name when it was used

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. (1, 28, 28) for images or (40,) for MNIST-1D."""
        return tuple(self.tensors["train"][0].shape[1:])

    def setup(self, stage: str | None = None) -> None:
        """Load, split and preprocess (once; later calls are free)."""
        if self.tensors:
            return
        cfg = self.cfg
        raw, self.dataset_name = load_raw(cfg, self.data_dir)
        pool_size = len(raw.y_pool)
        order = np.random.default_rng(cfg.split_seed).permutation(pool_size)
        if raw.x_val is not None:  # the source's own validation set (data=custom)
            train_idx, val = order, (raw.x_val, raw.y_val)
        elif cfg.val_size >= pool_size:
            raise DataError(
                f"data.val_size={cfg.val_size} leaves no training examples "
                f"(data={self.dataset_name} has {pool_size}); lower data.val_size"
            )
        else:
            val_idx, train_idx = order[: cfg.val_size], order[cfg.val_size :]
            val = (raw.x_pool[val_idx], raw.y_pool[val_idx])
        if cfg.train_size:
            train_idx = train_idx[: cfg.train_size]
        x_test, y_test = raw.x_test, raw.y_test
        if cfg.test_size and self.dataset_name != DatasetName.digits.value:
            x_test, y_test = x_test[: cfg.test_size], y_test[: cfg.test_size]
        prep = Preprocessor(cfg.preprocess, raw.max_value, cfg.per_feature, cfg.zca_epsilon)
        prep.fit(raw.x_pool[train_idx])
        splits = {
            "train": (raw.x_pool[train_idx], raw.y_pool[train_idx]),
            "val": val,
            "test": (x_test, y_test),
        }
        self.tensors = {
            split: (torch.from_numpy(prep.transform(x)), torch.from_numpy(y.astype(np.int64)))
            for split, (x, y) in splits.items()
        }
        self.num_classes = raw.num_classes

    def _on_device(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        # Moved once, so a GPU run pays no host-to-device copy per step.
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        x, y = self.tensors[split]
        if x.device != device:
            self.tensors[split] = x, y = x.to(device), y.to(device)
        return x, y

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """Batches sliced from tensors already on `device` are returned as they are: no copy
        and no walk over the batch per step. Anything else takes Lightning's default path."""
        x, y = batch
        if x.device == device and y.device == device:
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _rank_and_world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self):
        x, y = self._on_device("train")
        rank, world = self._rank_and_world()
        if len(y) < self.cfg.batch_size:
            raise DataError(
                f"data.batch_size={self.cfg.batch_size} exceeds the {len(y)} "
                "training examples; lower data.batch_size"
            )
        if self.cfg.batch_size % world:  # devices=auto: the world size is known only now
            raise ConfigError(
                f"data.batch_size={self.cfg.batch_size} is the global batch and must split "
                f"evenly over {world} ranks; use a multiple of {world}"
            )
        trainer = self.trainer
        return MemberBatches(
            x,
            y,
            self.cfg.batch_size,
            self.order_seeds,
            rank=rank,
            world_size=world,
            steps_done=(lambda: trainer.global_step) if trainer else None,
        )

    def val_dataloader(self) -> ResidentBatches:
        x, y = self._on_device("val")
        return ResidentBatches(x, y, self.cfg.eval_batch_size, shuffle=False, drop_last=False)

    def test_dataloader(self) -> ResidentBatches:
        x, y = self._on_device("test")
        return ResidentBatches(x, y, self.cfg.eval_batch_size, shuffle=False, drop_last=False)
