"""Configs typed by their schemas: a whole resolved config (a stack member's, a DDP rank's, a
saved run's), and each `norm` and `activation` option's settings by that option's schema (a
user's option composes untyped: its schema is in the user's module, not in Hydra's
ConfigStore)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from normlab.config.bounds import check_bounds
from normlab.config.errors import ConfigError
from normlab.config.keys import unknown_key_message
from normlab.config.schema import TrainConfig


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


def type_options(cfg: DictConfig) -> None:
    """The `norm` and `activation` nodes typed by their options' schemas, in place (ConfigError
    on a wrong key or value). Their entries are found in normlab.models' tables, so this imports
    torch."""
    from normlab.models.activations import activation_settings
    from normlab.models.norms import norm_settings

    cfg.norm = norm_settings(cfg.norm)
    cfg.activation = activation_settings(cfg.activation)


def typed_config(resolved: dict | DictConfig) -> DictConfig:
    """A resolved config as the typed config the schemas make of it (enums, bounds, each
    option's own schema)."""
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), resolved)
    type_options(cfg)
    return cfg
