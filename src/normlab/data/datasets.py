"""The `data` group's data sets: one table, `DATASETS`, from a data set's name to what it is.

An entry (`DatasetOption`) carries what the rest of normlab asks about a data set: its loader
(data config, data folder) -> RawData, and, where it is fixed, one example's shape and the
class count (the stacked launcher sizes its stacks from them before loading anything). The
names are the schema's `DatasetName` (a closed list the config checks; `tests/test_registries.py`
checks both sides agree). Your own data needs no entry: `data=custom data._target_=...`
(docs/extending.md, "Your own data").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normlab.config.schema import DatasetName
from normlab.data.cifar import load_cifar_dataset
from normlab.data.custom import load_custom_dataset
from normlab.data.sources import (
    RawData,
    load_digits_dataset,
    load_idx_dataset,
    load_mnist1d_dataset,
    load_synthetic_dataset,
)

Loader = Callable[[Any, Path], RawData]


@dataclass(frozen=True)
class DatasetOption:
    """One data set of the `data` group."""

    load: Loader  # (data config, data folder) -> its splits as arrays
    # one example's shape and the class count where fixed; None: the config or the data tell
    shape: tuple[int, ...] | None = None
    classes: int | None = None

    def shape_and_classes(self, data: dict[str, Any]) -> tuple[tuple[int, ...], int] | None:
        """(input shape, classes) of a resolved data config without loading it, or None."""
        if self.shape is None or self.classes is None:
            return None
        return self.shape, self.classes


def _idx(name: str) -> Loader:
    # MNIST downloads when missing; Fashion-MNIST comes from `make data` (or Debian's package)
    def load(cfg, data_dir: Path) -> RawData:
        download_ok = name == "mnist" and cfg.download
        return load_idx_dataset(name, cfg.root, data_dir, download_ok, cfg.get("mirror"))

    return load


def _cifar(name: str) -> Loader:
    def load(cfg, data_dir: Path) -> RawData:
        return load_cifar_dataset(name, cfg.root, data_dir, cfg.download, cfg.get("mirror"))

    return load


def _digits(cfg, data_dir: Path) -> RawData:
    return load_digits_dataset(cfg.test_size or 360, cfg.split_seed)


def _mnist1d(cfg, data_dir: Path) -> RawData:
    return load_mnist1d_dataset(cfg.num_samples or 5000, cfg.split_seed, data_dir)


def _synthetic(cfg, data_dir: Path) -> RawData:
    return load_synthetic_dataset(
        cfg.num_samples or 1200,
        cfg.num_features or 20,
        cfg.num_classes or 4,
        cfg.test_size or 200,
        cfg.split_seed,
    )


@dataclass(frozen=True)
class _Synthetic(DatasetOption):
    def shape_and_classes(self, data: dict[str, Any]) -> tuple[tuple[int, ...], int] | None:
        """Its shape and classes are the config's (num_features, num_classes)."""
        return (int(data.get("num_features") or 20),), int(data.get("num_classes") or 4)


DATASETS: dict[str, DatasetOption] = {
    DatasetName.fashion_mnist.value: DatasetOption(_idx("fashion_mnist"), (1, 28, 28), 10),
    DatasetName.mnist.value: DatasetOption(_idx("mnist"), (1, 28, 28), 10),
    DatasetName.cifar10.value: DatasetOption(_cifar("cifar10"), (3, 32, 32), 10),
    DatasetName.cifar100.value: DatasetOption(_cifar("cifar100"), (3, 32, 32), 100),
    DatasetName.digits.value: DatasetOption(_digits, (1, 8, 8), 10),
    DatasetName.mnist1d.value: DatasetOption(_mnist1d, (40,), 10),
    DatasetName.synthetic.value: _Synthetic(_synthetic),
    DatasetName.custom.value: DatasetOption(
        lambda cfg, _: load_custom_dataset(cfg)
    ),  # read from the data when loaded
}


def dataset_option(name: Any) -> DatasetOption:
    """The entry of data set `name` (a DatasetName or its value)."""
    return DATASETS[DatasetName(name).value]
