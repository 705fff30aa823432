"""An option's settings typed by its schema: a wrong type, an unknown key or a value out of
bounds is one line (a user's option composes untyped: its schema is in the user's module, not
in Hydra's ConfigStore). The tables that name each option's schema are in normlab.models
(normlab.models.options types a whole config with them)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from normlab.config.bounds import check_bounds
from normlab.config.errors import ConfigError
from normlab.config.keys import unknown_key_message
from normlab.config.targets import import_target


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


def option_entry(group: str, node: Any, table: dict[str, Any], entry_type: type) -> Any:
    """The table entry a `norm` or `activation` node configures: its `_target_` (a user's entry
    of `entry_type`, docs/extending.md), else `table[name]`."""
    target = node.get("_target_")
    if target:
        return _located_entry(group, str(target), entry_type)
    name = str(node.get("name"))
    if name not in table:
        raise ConfigError(
            f"{group}.name={name}: no such {group}; normlab has {', '.join(table)} "
            f"(your own: {group}._target_=<module.ENTRY>, docs/extending.md)"
        )
    return table[name]


@functools.cache
def _located_entry(group: str, target: str, entry_type: type) -> Any:
    where = f"{group}._target_={target}"
    entry = import_target(where, target, "package.module.ENTRY")
    if not isinstance(entry, entry_type):
        kind = entry_type.__name__
        article = "an" if kind[0] in "AEIOU" else "a"
        raise ConfigError(
            f"{where} is a {type(entry).__name__}, not {article} {kind} "
            f'(docs/extending.md, "A new {group}")'
        )
    return entry


def option_settings(group: str, node: Any, schema: type) -> DictConfig:
    """A `norm` or `activation` node typed and bounded by its option's schema (a built-in
    option's node, composed with its schema, already is)."""
    typed_by = OmegaConf.get_type(node)
    if typed_by is schema:
        return node
    if dataclasses.is_dataclass(typed_by) and not node.get("_target_"):
        name = node.get("name")
        raise ConfigError(
            f"{group}.name={name} on the settings of another option; choose it with "
            f"{group}={name} (the group option, not its name key)"
        )
    return typed_settings(node, schema, group)
