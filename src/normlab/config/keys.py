"""Which keys exist: every schema node is closed, so a key it does not have is refused in one
line naming the closest real one.

Hydra's `+key=value` adds a key with OmegaConf's `force_add`, which opens even a node typed by
a dataclass: left alone, `+norm.num_group=5` would compose, be written into config.yaml and
change nothing. Here every dataclass node of the schema (TrainConfig and the dataclasses it
holds) is closed, and so is each `norm` and `activation` option's own schema (the type its
node carries). The open places are the nodes the schema types `Any` or `dict`: `model` (a
network's own arguments, checked against its constructor or its `config_schema`),
`optimizer`, `scheduler.schedule`, `init.weight` / `init.bias` (each built on a throwaway
tensor), `logger.extra` / `callbacks.extra` (checked against their classes) and `search`.

Two checks, one rule: `check_override_keys` on the command line before Hydra composes (Hydra
would suggest the very `+key` that slips through, or crash on a key below a null node), and
`check_config_keys` on a composed config (what reaches training any other way, e.g. a sweeper's
parameters).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any

from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf

from normlab.config.errors import ConfigError
from normlab.config.schema import OPTION_SCHEMAS, TrainConfig

# pytorch_lightning.Trainer arguments that normlab sets another way: the option to use instead
REPLACED_TRAINER_OPTIONS = {
    "gradient_clip_val": "regularizer=grad_clip (regularizer.grad_clip.value=<max norm or value>)",
    "gradient_clip_algorithm": "regularizer=grad_clip (regularizer.grad_clip.algorithm=norm|value)",
    "accumulate_grad_batches": "a larger data.batch_size (norm.ghost_batches=N keeps batch-norm "
    "statistics per 1/N of the batch, as accumulating N batches would)",
    "callbacks": "callbacks=<option> or callbacks.extra.<name>._target_=<class>",
    "logger": "logger=csv|wandb|tensorboard|none or logger.extra.<name>._target_=<class>",
    "enable_checkpointing": "callbacks.checkpoint=true|false",
    "default_root_dir": "hydra.run.dir=<folder>",
    "sync_batchnorm": "norm.sync=true|false",
    "fast_dev_run": "trainer=debug",
    "limit_train_batches": "data.train_size=<examples>",
    "overfit_batches": "data.train_size=<examples>",
}
# close enough to suggest (norm.num_group -> num_groups: 0.95); lower suggests unrelated keys
_SUGGESTION_CUTOFF = 0.75


def _schema_node(hint: Any) -> type | None:
    """The dataclass a field holds (also through `X | None`), or None for an open or leaf one."""
    for candidate in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None


def _fields(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


def unknown_key_message(key: str, known: list[str]) -> str:
    """One line for `key`, absent from a node whose keys are `known`."""
    parent, _, name = key.rpartition(".")
    if parent == "trainer" and name in REPLACED_TRAINER_OPTIONS:
        instead = REPLACED_TRAINER_OPTIONS[name]
        return f"{key}: normlab sets this Trainer argument itself; use {instead}"
    prefix = f"{parent}." if parent else ""
    close = difflib.get_close_matches(name, known, n=1, cutoff=_SUGGESTION_CUTOFF)
    if close:
        return f"{key}: no such key; did you mean {prefix}{close[0]}?"
    return f"{key}: no such key; {parent or 'the config'} takes: {', '.join(known)}"


def check_key(key: str, schema: type = TrainConfig, prefix: str = "") -> None:
    """`key` (dotted) exists in `schema`, or lies below one of its open nodes; else ConfigError."""
    parts = key.split(".")
    for depth, name in enumerate(parts):
        fields = _fields(schema)
        if name not in fields:
            missing = prefix + ".".join(parts[: depth + 1])
            raise ConfigError(unknown_key_message(missing, list(fields)))
        nested = _schema_node(fields[name])
        if nested is None:
            return  # a leaf, or an open node (Any, dict): checked where it is built
        schema = nested


def _chosen_schemas(overrides: list[Override]) -> dict[str, type]:
    """The schema of each group whose option the command line names (`norm=group`): its keys
    can be checked before composing. A group chosen elsewhere (an experiment, the defaults)
    or swept is checked on the composed config instead."""
    chosen = {}
    for override in overrides:
        group = override.key_or_group
        if group in OPTION_SCHEMAS and not override.is_sweep_override():
            value = override.value()
            if isinstance(value, str) and value in OPTION_SCHEMAS[group]:
                chosen[group] = OPTION_SCHEMAS[group][value]
    return chosen


def check_override_keys(overrides: list[Override], config_dir: str) -> None:
    """Every key the command line sets exists (group choices and Hydra's own keys aside)."""
    chosen = _chosen_schemas(overrides)
    for override in overrides:
        if override.is_hydra_override() or override.is_delete():
            continue
        key = override.key_or_group
        if "/" in key or "@" in key or (Path(config_dir) / key).is_dir():
            continue  # a group choice: norm=group, experiment=bn_cnn
        group, _, rest = key.partition(".")
        if group in chosen and rest:
            check_key(rest, chosen[group], prefix=f"{group}.")
        else:
            check_key(key)


def check_config_keys(cfg: DictConfig, prefix: str = "") -> None:
    """Every key of a composed config exists in the dataclass its node is typed by (the node's
    own type, so a group whose options carry schemas of their own is checked by each); nodes no
    dataclass types (model, optimizer, the `extra` dicts, ...) are open."""
    schema = OmegaConf.get_type(cfg)
    if not dataclasses.is_dataclass(schema):
        return
    fields = _fields(schema)
    # unresolved: a leaf may be ${hydra:...}, which only a Hydra job can resolve
    for name, value in cfg.items_ex(resolve=False):
        key = f"{prefix}{name}"
        if name not in fields:
            raise ConfigError(unknown_key_message(key, list(fields)))
        if isinstance(value, DictConfig):
            check_config_keys(value, key + ".")
