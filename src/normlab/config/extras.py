"""`logger.extra` and `callbacks.extra`: Lightning loggers and callbacks named in the config by
`_target_`, checked before training (one line naming the key) and built with
hydra.utils.instantiate.

Lightning is imported only when an entry is there to check: the precheck runs before every
training and every sweep, and importing Lightning costs seconds (the one-line error of a bad
command line, and a sweep's parent process, would pay them for nothing)."""

from __future__ import annotations

import importlib.util
import inspect
from typing import Any

from hydra._internal.utils import _locate
from hydra.utils import instantiate
from omegaconf import DictConfig

from normlab.config.errors import ConfigError

SECTIONS = ("logger.extra", "callbacks.extra")
EXAMPLES = {
    "logger.extra": "pytorch_lightning.loggers.TensorBoardLogger",
    "callbacks.extra": "pytorch_lightning.callbacks.LearningRateMonitor",
}
FILLED_IN = ("save_dir",)  # arguments normlab gives when an entry leaves them out


def section_base(where: str) -> type:
    """The Lightning class every entry of section `where` must subclass."""
    from pytorch_lightning.callbacks import Callback
    from pytorch_lightning.loggers import Logger

    return Logger if where == "logger.extra" else Callback


def optional_packages() -> dict[type, tuple[tuple[str, ...], str]]:
    """Lightning classes whose packages are optional: (importable modules, normlab's extra)."""
    from pytorch_lightning.callbacks import RichProgressBar
    from pytorch_lightning.loggers import TensorBoardLogger

    return {
        TensorBoardLogger: (("tensorboard", "tensorboardX"), "tensorboard"),
        RichProgressBar: (("rich",), "progress"),
    }


def entries(section: Any) -> dict[str, Any]:
    """The named entries of an `extra` dict; a name set to null is dropped."""
    if section is None:
        return {}
    return {str(name): entry for name, entry in section.items() if entry is not None}


def _arguments(entry: DictConfig) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if not str(key).startswith("_")}


def check_entry(where: str, entry: Any, base: type) -> type:
    """The class `entry` names, once it is sure to build: importable, a `base`, its optional
    package installed, its arguments accepted. Raises ConfigError naming `where`."""
    target = entry.get("_target_") if isinstance(entry, DictConfig) else None
    if not isinstance(target, str):
        raise ConfigError(
            f"{where}: not a {{_target_: class, arguments}} entry; "
            f"e.g. +{where}._target_={EXAMPLES[where.rsplit('.', 1)[0]]}"
        )
    try:
        # what instantiate resolves `_target_` with (hydra.utils.get_class logs every miss)
        cls = _locate(target)
    except Exception as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(
            f"{where}._target_={target}: cannot import it ({str(cause).splitlines()[0]}); "
            "give the class's full import path"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        hint = (
            "; normlab's Trainer is pytorch_lightning's: import the class from pytorch_lightning"
            if target.startswith("lightning.")
            else ""
        )
        raise ConfigError(
            f"{where}._target_={target}: not a pytorch_lightning {base.__name__}{hint}"
        )
    for needs, (modules, extra) in optional_packages().items():
        if issubclass(cls, needs) and not any(importlib.util.find_spec(m) for m in modules):
            raise ConfigError(
                f"{where}: {cls.__name__} needs the {modules[0]} package; "
                f"pip install 'normlab[{extra}]' (or {modules[0]})"
            )
    arguments = _arguments(entry)
    parameters = inspect.signature(cls).parameters
    try:
        filled = {key: None for key in FILLED_IN if key in parameters and key not in arguments}
        inspect.signature(cls).bind(**filled, **arguments)
    except TypeError as exc:
        accepted = ", ".join(name for name in parameters if name not in ("args", "kwargs"))
        raise ConfigError(f"{where}: {target} {exc} (it takes: {accepted})") from None
    return cls


def check_extras(cfg: DictConfig) -> None:
    """Every `logger.extra` and `callbacks.extra` entry names a class that will build."""
    for where in SECTIONS:
        group, _ = where.split(".")
        for name, entry in entries(cfg[group].get("extra")).items():
            check_entry(f"{where}.{name}", entry, section_base(where))


def build_extras(section: Any, where: str, **filled_in: Any) -> list[Any]:
    """One instance of each entry of `section` (`where`: its key, e.g. logger.extra), given
    the `filled_in` arguments (save_dir) its class takes and the entry leaves out."""
    built = []
    for name, entry in entries(section).items():
        cls = check_entry(f"{where}.{name}", entry, section_base(where))
        parameters = inspect.signature(cls).parameters
        given = {
            key: value for key, value in filled_in.items() if key in parameters and key not in entry
        }
        try:
            built.append(instantiate(entry, **given))
        except Exception as exc:
            cause = exc
            while cause.__cause__ is not None:  # hydra wraps the real error
                cause = cause.__cause__
            raise ConfigError(
                f"{where}.{name}: {entry._target_} failed to build: {str(cause).splitlines()[0]}"
            ) from exc
    return built
