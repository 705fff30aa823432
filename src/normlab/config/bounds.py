"""The numeric ranges the schema declares next to each field (`ge`, `gt`, `le`, `lt` in its
metadata: normlab.config.schema.bounded), enforced on a composed config in one line each."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf

from normlab.config.errors import ConfigError
from normlab.config.schema import OPTION_SCHEMAS, TrainConfig

BOUND_TEXT = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
BOUND_TEST = {
    "ge": lambda v, b: v >= b,
    "gt": lambda v, b: v > b,
    "le": lambda v, b: v <= b,
    "lt": lambda v, b: v < b,
}


def _dataclass_of(hint: Any) -> type | None:
    for candidate in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None


def check_bounds(cfg: DictConfig, schema: type = TrainConfig, prefix: str = "") -> None:
    """Enforce the ge/gt/le/lt bounds declared in the schema's field metadata."""
    hints = typing.get_type_hints(schema)
    for schema_field in dataclasses.fields(schema):
        nested = _dataclass_of(hints[schema_field.name])
        if schema_field.name in OPTION_SCHEMAS:  # typed by its option's own schema
            nested = OmegaConf.get_type(cfg, schema_field.name)
            nested = nested if dataclasses.is_dataclass(nested) else None
        if nested is None and not schema_field.metadata:
            continue  # nothing to check; reading it could resolve e.g. ${hydra:...} paths
        value = cfg.get(schema_field.name)
        key = f"{prefix}{schema_field.name}"
        if nested is not None and isinstance(value, DictConfig):
            check_bounds(value, nested, key + ".")
            continue
        if value is None:
            continue
        for bound, limit in schema_field.metadata.items():
            if not BOUND_TEST[bound](value, limit):
                raise ConfigError(f"{key}={value}: must be {BOUND_TEXT[bound]} {limit}")


SEED_KEYS = ("seed", "seed_init", "seed_data")


def check_seeds(cfg: DictConfig) -> None:
    """The seeds' bounds: all a config that differs from a validated one only in its seeds
    still needs checking (a stack's members often do)."""
    for schema_field in dataclasses.fields(TrainConfig):
        value = cfg.get(schema_field.name)
        if schema_field.name in SEED_KEYS and value is not None:
            for bound, limit in schema_field.metadata.items():
                if not BOUND_TEST[bound](value, limit):
                    raise ConfigError(
                        f"{schema_field.name}={value}: must be {BOUND_TEXT[bound]} {limit}"
                    )
