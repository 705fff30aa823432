"""Import what a `_target_` names (a user's network class, data function), with one-line errors."""

from __future__ import annotations

import importlib
from typing import Any

from normlab.config.errors import ConfigError


def import_target(where: str, target: str, example: str) -> Any:
    """The object at dotted path `target`; ConfigError naming `where` (e.g.
    `model._target_=pkg.Net`) when it cannot be imported or found. `example`: the form of a
    dotted path, for the message (package.module.Class)."""
    module_name, _, name = target.rpartition(".")
    if not module_name:
        raise ConfigError(f"{where}: give the full dotted path ({example})")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{where}: cannot import {module_name} ({exc}); is it installed or on PYTHONPATH?"
        ) from None
    found = getattr(module, name, None)
    if found is None:
        raise ConfigError(f"{where}: {module_name} has no attribute {name}")
    return found
