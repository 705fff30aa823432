"""An option's settings typed by its schema: a wrong type, an unknown key or a value out of
bounds is one line (a user's option composes untyped: its schema is in the user's module, not
in Hydra's ConfigStore). The tables that name each option's schema are in normlab.models
(normlab.models.options types a whole config with them)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from normlab.config.bounds import check_bounds
from normlab.config.errors import ConfigError
from normlab.config.keys import unknown_key_message


def typed_settings(node: Any, schema: type, group: str) -> DictConfig:
    """`node` merged into `schema`: a wrong type, an unknown key or a value out of bounds is one
    line naming `<group>.<key>`."""
    unknown = [key for key in node if key not in schema.__dataclass_fields__]
    if unknown:
        raise ConfigError(
            unknown_key_message(f"{group}.{unknown[0]}", list(schema.__dataclass_fields__))
        )
    try:
        typed = OmegaConf.merge(OmegaConf.structured(schema), node)
    except OmegaConfBaseException as exc:
        key = f"{group}.{exc.full_key}" if getattr(exc, "full_key", None) else group
        reason = str(getattr(exc, "msg", exc)).strip().splitlines()[0]
        raise ConfigError(f"{key}: {reason}") from None
    check_bounds(typed, schema, f"{group}.")
    return typed
