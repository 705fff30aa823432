"""`data=custom`: a user's own data, from the function named by `data._target_`.

The function, called with `data.kwargs` (`+data.kwargs.n=100`), returns either

- a (train, val, test) tuple of map-style datasets of (x, y) pairs: read once into arrays and
  from then on treated like the built-in sets (preprocessing, batch size, resident batches,
  stacked sweeps); or
- a LightningDataModule, for data that does not fit in memory: it streams its own batches
  (its batch size, transforms and workers), one network per run (normlab.data.streaming).

Everything that can be checked before training is, with one line naming `data._target_`: the
import, the call, the return type, every example's shape, every label's range, empty splits.
The result is kept for the process, so the precheck and the run it checks call the function once.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from normlab.config.errors import ConfigError
from normlab.config.targets import import_target
from normlab.data.sources import RawData

SPLITS = ("train", "val", "test")
_RETURNS = (
    "return a LightningDataModule or a (train, val, test) tuple of map-style datasets of (x, y)"
)
_DATAMODULE_HOOKS = ("setup", "train_dataloader", "val_dataloader", "test_dataloader")


def data_target(data_cfg) -> str:
    """The dotted path in `data._target_` (data=custom), or a one-line error."""
    if OmegaConf.is_missing(data_cfg, "_target_") or data_cfg.get("_target_") is None:
        raise ConfigError(
            "data._target_ is not set: name a function returning your data, e.g. "
            "data=custom data._target_=mypackage.data.load"
        )
    return str(data_cfg._target_)


def is_datamodule(value: Any) -> bool:
    """Whether `value` is a LightningDataModule (of either Lightning namespace: only its hooks
    are called, through normlab's own wrapper)."""
    return not isinstance(value, (tuple, list)) and all(
        callable(getattr(value, hook, None)) for hook in _DATAMODULE_HOOKS
    )


def custom_source(data_cfg) -> RawData | Any:
    """What `data._target_` gives: its datasets read into a RawData, or its LightningDataModule."""
    given = data_cfg.get("kwargs")
    kwargs = OmegaConf.to_container(given, resolve=True) if given is not None else {}
    arguments = json.dumps(kwargs, sort_keys=True, default=str)
    return _source(data_target(data_cfg), arguments, data_cfg.get("num_classes"))


def streams(data_cfg) -> bool:
    """Whether data=custom gives a LightningDataModule (its batches stream, one network per run)."""
    return not isinstance(custom_source(data_cfg), RawData)


def load_custom_dataset(data_cfg) -> RawData:
    """data=custom's datasets, held in memory (a LightningDataModule cannot be)."""
    source = custom_source(data_cfg)
    if not isinstance(source, RawData):
        raise ConfigError(
            f"data._target_={data_target(data_cfg)}: gives a LightningDataModule, which streams "
            "its batches; this needs the data in memory: return (train, val, test) datasets"
        )
    return source


@functools.lru_cache(maxsize=1)
def _source(target: str, arguments: str, num_classes: int | None) -> RawData | Any:
    where = f"data._target_={target}"
    returned = _call(_function(target, where), json.loads(arguments), where)
    if is_datamodule(returned):
        if num_classes is None and not isinstance(getattr(returned, "num_classes", None), int):
            raise ConfigError(
                f"{where}: its LightningDataModule has no num_classes attribute; "
                "set data.num_classes=<number of classes>"
            )
        return returned
    if not isinstance(returned, (tuple, list)):
        raise ConfigError(f"{where}: returned {type(returned).__name__}; {_RETURNS}")
    if len(returned) != len(SPLITS):
        raise ConfigError(f"{where}: returned {len(returned)} items; {_RETURNS}")
    return _read_splits(dict(zip(SPLITS, returned, strict=True)), num_classes, where)


def _function(target: str, where: str):
    function = import_target(where, target, "package.module.function")
    if not callable(function):
        name = target.rpartition(".")[2]
        raise ConfigError(f"{where}: {name} is a {type(function).__name__}, not a function")
    return function


def _call(function, kwargs: dict, where: str):
    try:
        return function(**kwargs)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(
            f"{where}: calling it failed ({type(exc).__name__}: {reason}); "
            "+data.kwargs.<name>=... passes its arguments"
        ) from None


def _read_splits(datasets: dict[str, Any], num_classes: int | None, where: str) -> RawData:
    """The three splits as arrays, every example checked; labels against the class count."""
    arrays = {split: _read_split(split, dataset, where) for split, dataset in datasets.items()}
    shape = arrays["train"][0].shape[1:]
    for split in SPLITS[1:]:
        if arrays[split][0].shape[1:] != shape:
            raise ConfigError(
                f"{where}: {split} examples have shape {tuple(arrays[split][0].shape[1:])}, "
                f"train's {tuple(shape)}; every example needs one shape"
            )
    classes, source = _class_count(datasets["train"], arrays, num_classes)
    for split, (_, labels) in arrays.items():
        bad = np.flatnonzero((labels < 0) | (labels >= classes))
        if bad.size:
            raise ConfigError(
                f"{where}: {split}[{bad[0]}] has label {labels[bad[0]]}, outside 0..{classes - 1} "
                f"({source}); labels are class indices"
            )
    if classes < 2:
        raise ConfigError(f"{where}: every label is 0; a classifier needs at least 2 classes")
    x_train = arrays["train"][0]
    peak = float(np.abs(x_train).max()) if x_train.size else 0.0
    return RawData(
        *arrays["train"],
        *arrays["test"],
        num_classes=classes,
        max_value=peak or 1.0,
        x_val=arrays["val"][0],
        y_val=arrays["val"][1],
    )


def _class_count(train, arrays, num_classes: int | None) -> tuple[int, str]:
    """The number of classes and where it comes from: data.num_classes, the train dataset's
    `classes` (torchvision's convention), else the largest label + 1."""
    if num_classes is not None:
        return int(num_classes), f"data.num_classes={num_classes}"
    named = getattr(train, "classes", None)
    if isinstance(named, Sequence) and not isinstance(named, str) and len(named) > 1:
        return len(named), f"train.classes has {len(named)}"
    top = max(int(labels.max()) for _, labels in arrays.values())
    return top + 1, "the largest label + 1; set data.num_classes to fix it"


def _read_split(split: str, dataset, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Every (x, y) of a map-style dataset as one input array and one int64 label array."""
    if isinstance(dataset, torch.utils.data.IterableDataset) or not (
        hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")
    ):
        raise ConfigError(
            f"{where}: {split} is a {type(dataset).__name__}, not a map-style dataset "
            "(len and [i]); return a LightningDataModule to stream it"
        )
    if len(dataset) == 0:
        raise ConfigError(f"{where}: the {split} split is empty; every split needs examples")
    if isinstance(dataset, torch.utils.data.TensorDataset) and len(dataset.tensors) == 2:
        x, y = (tensor.detach().cpu() for tensor in dataset.tensors)
        if y.ndim != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ConfigError(
                f"{where}: {split} labels are a {y.dtype} tensor of shape {tuple(y.shape)}; "
                "give one integer class index per example"
            )
        return _inputs(x, split, where), y.numpy().astype(np.int64)
    inputs, labels, first = [], [], None
    for index in range(len(dataset)):
        item = dataset[index]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ConfigError(
                f"{where}: {split}[{index}] is a {type(item).__name__}, not an (x, y) pair"
            )
        x = _example(item[0], f"{split}[{index}]", where)
        if first is None:
            first = x.shape
        elif x.shape != first:
            raise ConfigError(
                f"{where}: {split}[{index}] has shape {tuple(x.shape)}, {split}[0] "
                f"{tuple(first)}; every example needs one shape"
            )
        inputs.append(x)
        labels.append(_label(item[1], f"{split}[{index}]", where))
    return torch.stack(inputs).numpy(), np.asarray(labels, dtype=np.int64)


def _numeric(tensor: torch.Tensor) -> bool:
    return not (tensor.is_complex() or tensor.dtype == torch.bool)


def _example(x, at: str, where: str) -> torch.Tensor:
    tensor = None
    # not any array-like: a PIL image would turn into a channels-last array without a word
    if isinstance(x, (torch.Tensor, np.ndarray, list, tuple, int, float, np.number)):
        try:
            tensor = torch.as_tensor(x).detach().cpu()
        except (TypeError, ValueError, RuntimeError):
            tensor = None
    if tensor is None or not _numeric(tensor):
        raise ConfigError(
            f"{where}: {at} x is a {type(x).__name__}, not a numeric tensor or array "
            "(images: convert them, e.g. torchvision's ToTensor)"
        )
    if tensor.ndim == 0:
        raise ConfigError(f"{where}: {at} x is a scalar; give each example as a vector or image")
    return tensor


def _label(y, at: str, where: str) -> int:
    if isinstance(y, torch.Tensor) and y.ndim == 0 and not y.is_floating_point():
        y = y.item()
    if isinstance(y, (bool, np.bool_)) or not isinstance(y, (int, np.integer)):
        raise ConfigError(
            f"{where}: {at} has label {y!r} ({type(y).__name__}); labels are integer class indices"
        )
    return int(y)


def _inputs(x: torch.Tensor, split: str, where: str) -> np.ndarray:
    if x.ndim < 2 or not _numeric(x):
        raise ConfigError(
            f"{where}: {split} inputs are a {x.dtype} tensor of shape {tuple(x.shape)}; "
            "give numeric examples of one shape, stacked along the first axis"
        )
    return x.numpy()
