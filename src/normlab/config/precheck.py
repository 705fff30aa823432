"""Compose and validate the user's overrides before Hydra launches anything.

Hydra reports composition errors over several lines; normlab turns every config mistake
into one line that names the key and the fix, and exits before a run folder or a sweep starts.
A multirun is checked on its first cell (the first value of every swept key).
"""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from normlab.config.errors import ConfigError
from normlab.config.validate import validate

_NOISE = ("Config search path", "provider=", "reference_type=", "object_type=", "full_key:")


def _options_hint(message: str) -> str:
    options = [
        line.strip()
        for line in message.splitlines()
        if line.startswith("\t") and "provider=" not in line
    ]
    return f"; available: {', '.join(options)}" if options else ""


def explain(exc: BaseException) -> str:
    """One line from a Hydra / OmegaConf composition error: what, which key, how to fix."""
    if isinstance(exc, MissingConfigException):
        first = str(exc).strip().splitlines()[0].removeprefix("In 'train': ")
        return first + _options_hint(str(exc))
    parts = []
    for error in (exc, exc.__cause__):
        if error is None:
            continue
        text = getattr(error, "msg", None) or str(error)
        parts += [
            line.strip()
            for line in text.splitlines()
            if line.strip() and not line.strip().startswith(_NOISE)
        ]
        key = getattr(error, "full_key", None)
        if key:
            parts.append(f"key: {key}")
    return "; ".join(dict.fromkeys(parts))


def first_cell(overrides: list[str]) -> list[str]:
    """The overrides of a multirun's first cell; Hydra's own overrides dropped."""
    cell = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_hydra_override():
            continue
        if override.is_sweep_override():
            value = next(iter(override.sweep_string_iterator()))
            prefix = "+" if override.is_add() else "~" if override.is_delete() else ""
            cell.append(f"{prefix}{override.get_key_element()}={value}")
        else:
            cell.append(override.input_line)
    return cell


def compose_checked(config_dir: str, config_name: str, overrides: list[str]) -> DictConfig:
    """Compose and validate, raising ConfigError with one line on any mistake."""
    try:
        cell = first_cell(overrides)
        with initialize_config_dir(config_dir, version_base="1.3"):
            cfg = compose(config_name, overrides=cell)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(explain(exc)) from None
    validate(cfg)
    return cfg
