"""The user's own code a run imports by `_target_` (its network, data function, callbacks and
loggers): module name, file and sha256, so provenance.json ties a result to the code behind it."""

from __future__ import annotations

import functools
import hashlib
import sys
from pathlib import Path
from typing import Any

from hydra._internal.utils import _locate

# packages whose versions provenance.json already records (normlab: its commit and version)
_VERSIONED = (
    "normlab",
    "torch",
    "pytorch_lightning",
    "lightning_fabric",
    "hydra",
    "omegaconf",
    "torchmetrics",
    "wandb",
    "numpy",
)


def configured_targets(cfg) -> dict[str, str]:
    """Config key -> `_target_` of the network, the data=custom function and every extra
    callback and logger."""
    targets = {"model._target_": cfg.model.get("_target_"), "data._target_": None}
    if cfg.data.get("name") == "custom":
        targets["data._target_"] = cfg.data.get("_target_")
    for section in ("callbacks", "logger"):
        for name, entry in (cfg[section].get("extra") or {}).items():
            if entry is not None and entry.get("_target_"):
                targets[f"{section}.extra.{name}._target_"] = entry.get("_target_")
    return {key: str(target) for key, target in targets.items() if target}


def sha256_of(path: Path) -> str:
    """The sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.cache  # a stack's members name the same code: hash each file once
def describe(target: str) -> dict[str, Any] | None:
    """Module, file and sha256 of the code `target` names; None for a versioned package's."""
    try:
        found = _locate(target)
    except Exception:  # the config checks report what cannot be imported
        return None
    module_name = getattr(found, "__module__", None) or target.rpartition(".")[0]
    if module_name.split(".")[0] in _VERSIONED:
        return None
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    path = Path(file).resolve() if file else None
    return {
        "target": target,
        "module": module_name,
        "file": str(path) if path else None,
        "sha256": sha256_of(path) if path and path.is_file() else None,
    }


def user_code(cfg) -> dict[str, dict[str, Any]]:
    """Config key -> the user's code it names (normlab's own and versioned packages left out)."""
    described = {key: describe(target) for key, target in configured_targets(cfg).items()}
    return {key: record for key, record in described.items() if record is not None}
