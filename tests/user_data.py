"""A user's own data module, outside the normlab package, as `data=custom` reads it: functions
returning (train, val, test) datasets or a LightningDataModule, and broken ones for the
one-line errors (tests/helpers.py INVALID, tests/test_custom_data.py)."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

CLASSES = 3


def _split(size: int, features: int, seed: int) -> TensorDataset:
    """Gaussian clusters, one per class, in `features` dimensions: learnable in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (size,), generator=generator)
    centres = torch.eye(CLASSES, features) * 3.0
    inputs = centres[labels] + torch.randn(size, features, generator=generator)
    return TensorDataset(inputs * 10.0 + 5.0, labels)


def tensors(train: int = 600, features: int = 12) -> tuple[TensorDataset, ...]:
    """(train, val, test) TensorDatasets."""
    return _split(train, features, 0), _split(150, features, 1), _split(150, features, 2)


class NumpyPairs(Dataset):
    """A map-style dataset of (numpy array, int) pairs, the other common way to write one."""

    def __init__(self, base: TensorDataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        x, y = self.base[index]
        return x.numpy(), int(y)


def pairs(train: int = 600) -> tuple[NumpyPairs, ...]:
    """The same data as `tensors`, item by item as (numpy array, int)."""
    return tuple(NumpyPairs(split) for split in tensors(train))


class ClustersModule(pl.LightningDataModule):
    """The same data streamed by DataLoaders of batch 20 (for data that would not fit)."""

    num_classes = CLASSES

    def __init__(self, label_offset: int = 0):
        super().__init__()
        self.label_offset = label_offset

    def setup(self, stage: str | None = None) -> None:
        self.splits = [
            TensorDataset(x, y + self.label_offset) for x, y in (s.tensors for s in tensors())
        ]

    def train_dataloader(self):
        return DataLoader(self.splits[0], batch_size=20, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.splits[1], batch_size=50)

    def test_dataloader(self):
        return DataLoader(self.splits[2], batch_size=50)


def datamodule(label_offset: int = 0) -> ClustersModule:
    """A LightningDataModule over the same clusters."""
    return ClustersModule(label_offset)


class Stream(IterableDataset):
    def __iter__(self):
        return iter(tensors()[0])


def iterable():
    """Broken: an IterableDataset has no len and no [i]."""
    _, val, test = tensors()
    return Stream(), val, test


def shapes_differ():
    """Broken: the validation examples have one feature fewer than the training examples."""
    train, val, test = tensors()
    return train, TensorDataset(val.tensors[0][:, :-1], val.tensors[1]), test


def label_out_of_range():
    """Broken: one test label is 7 while data.num_classes=3 (the command line sets it)."""
    train, val, test = tensors()
    labels = test.tensors[1].clone()
    labels[5] = 7
    return train, val, TensorDataset(test.tensors[0], labels)


def empty_val():
    """Broken: no validation examples."""
    train, _, test = tensors()
    return train, TensorDataset(torch.zeros(0, 12), torch.zeros(0, dtype=torch.long)), test


def float_labels():
    """Broken: labels as floats (a regression target, not class indices)."""
    train, val, test = pairs()
    return [(x, float(y)) for x, y in train], val, test


def two_splits():
    """Broken: (train, test) without a validation split."""
    train, _, test = tensors()
    return train, test


def inconsistent_examples():
    """Broken: one training example of another shape."""
    train, val, test = pairs()
    items = [(x, y) for x, y in train]
    items[3] = (np.zeros(5, dtype=np.float32), items[3][1])
    return items, val, test
