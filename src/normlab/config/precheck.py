"""Compose and validate the user's overrides before Hydra launches anything.

Hydra reports composition errors over several lines; normlab turns every config mistake
into one line that names the key and the fix, and exits before a run folder or a sweep starts.
A multirun is checked on its first cell (the first value of every swept key), Hydra's own
overrides (`hydra/launcher=...`, `hydra.launcher.n_jobs=...`) included.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from normlab.config.errors import ConfigError
from normlab.config.keys import check_override_keys
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
        first = str(exc).strip().splitlines()[0]
        first = first.removeprefix("In 'train': ").removeprefix("In 'hydra/config': ")
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


def first_cell(overrides: list[str], *, keep_hydra: bool = False) -> list[str]:
    """The overrides of a multirun's first cell; Hydra's own overrides dropped unless
    `keep_hydra`."""
    cell = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_hydra_override() and not keep_hydra:
            continue
        if override.is_sweep_override():
            value = next(iter(override.sweep_string_iterator()))
            prefix = "+" if override.is_add() else "~" if override.is_delete() else ""
            cell.append(f"{prefix}{override.get_key_element()}={value}")
        else:
            cell.append(override.input_line)
    return cell


def check_hydra_not_swept(overrides: list[Override]) -> None:
    """Hydra's own settings take one value per command line (Hydra refuses a sweep of them)."""
    for override in overrides:
        if override.is_hydra_override() and override.is_sweep_override():
            raise ConfigError(
                f"{override.input_line}: Hydra's own settings cannot be swept; give "
                f"{override.get_key_element()} one value (or quote a value holding commas)"
            )


def check_group_lists(overrides: list[Override], config_dir: str) -> None:
    """A list of options of a group (`regularizer=[l2,dropout]`) names each option once: Hydra
    would merge a repeated one silently. Every value of a swept list is checked."""
    for override in overrides:
        if override.is_delete() or not (Path(config_dir) / override.key_or_group).is_dir():
            continue
        values = override.sweep_iterator() if override.is_sweep_override() else [override.value()]
        for options in values:
            if not isinstance(options, list):
                continue
            repeated = [o for i, o in enumerate(options) if o in options[:i]]
            if repeated:
                unique = ",".join(dict.fromkeys(str(o) for o in options))
                raise ConfigError(
                    f"{override.key_or_group}=[{','.join(map(str, options))}]: {repeated[0]} is "
                    f"listed twice; name each option once: {override.key_or_group}=[{unique}]"
                )


def check_output_dir(output_dir: str) -> None:
    """paths.output_dir can be created and written, so Hydra can make the run folder in it.

    The folder is created (Hydra would create it a moment later anyway) and never removed:
    removing it could pull it from under a sibling process (SLURM tasks) checking it too.
    """
    try:
        folder = Path(output_dir).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"paths.output_dir={output_dir}: cannot create or write this folder ({reason}); "
            "point it at a writable folder (paths.output_dir=<folder> or NORMLAB_ROOT=<folder>)"
        ) from None


def check_environment() -> None:
    """normlab's environment variables hold valid values."""
    from normlab.sweep import cell_lease_seconds

    try:
        cell_lease_seconds()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def runs_elsewhere(launcher: DictConfig) -> bool:
    """Whether a sweep's launcher runs the cells on other machines (SLURM), whose devices this
    machine cannot check."""
    return "SlurmLauncher" in str(launcher.get("_target_")) or launcher.get("backend") == "slurm"


def _turn_on_hint(parent: str) -> str:
    """How to turn on the null node `parent` (a regularizer, the instruments, W&B, ...)."""
    group, _, option = parent.partition(".")
    if group == "regularizer":
        return f"regularizer=[{option}] (added to the list you use)"
    return "its option, e.g. callbacks=instruments, callbacks=landscape, logger=wandb"


def _below_null(config_name: str, cell: list[str]) -> str:
    """One line for a key set below a node that is null in the composed config (`+a.b.c=v`,
    or `a.b.c=v`, with `a.b` off): Hydra fails on it with a bare AssertionError."""
    parsed = OverridesParser.create().parse_overrides(cell)
    keyed = [o for o in parsed if "." in o.key_or_group and not o.is_hydra_override()]
    cfg = compose(config_name, overrides=[o.input_line for o in parsed if o not in keyed])
    for override in keyed:
        key = override.key_or_group
        parent = key.rpartition(".")[0]
        if OmegaConf.select(cfg, parent) is None:
            return (
                f"{override.input_line}: {parent} is null here (off); turn it on first with "
                f"{_turn_on_hint(parent)}, then set {key}=<value>"
            )
    return f"{' '.join(o.input_line for o in keyed)}: a key set below a null node"


def with_user_config_dir(cell: list[str], user_config_dir: str) -> list[str]:
    """`cell` searching `user_config_dir` too, where Hydra's `--config-dir` puts it: after
    normlab's configs, before any `hydra.searchpath` entry of the command line."""
    folder = Path(user_config_dir).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(
            f"--config-dir {user_config_dir}: no such folder; give a folder holding your "
            "<group>/<option>.yaml files"
        )
    searched, rest = [f"file://{folder}"], []
    for override in OverridesParser.create().parse_overrides(cell):
        if override.get_key_element() == "hydra.searchpath":
            searched += list(override.value())
        else:
            rest.append(override.input_line)
    quoted = ",".join(f"'{entry}'" for entry in searched)
    return [*rest, f"hydra.searchpath=[{quoted}]"]


def compose_checked(
    config_dir: str,
    config_name: str,
    overrides: list[str],
    *,
    multirun: bool = False,
    user_config_dir: str | None = None,
) -> DictConfig:
    """Compose and validate, raising ConfigError with one line on any mistake. Then make sure
    the output folder is usable (last: a config mistake creates no folder). A `multirun` is
    checked on its first cell, and on this machine's devices unless its launcher runs the
    cells elsewhere. `user_config_dir`: a user's own config folder (`--config-dir`), searched
    after `config_dir`."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        check_hydra_not_swept(parsed)
        check_group_lists(parsed, config_dir)
        check_override_keys(parsed, config_dir)
        cell = first_cell(overrides, keep_hydra=True)
        if user_config_dir is not None:
            cell = with_user_config_dir(cell, user_config_dir)
        with initialize_config_dir(config_dir, version_base="1.3"):
            try:
                cfg = compose(config_name, overrides=cell, return_hydra_config=multirun)
            except AssertionError:
                raise ConfigError(_below_null(config_name, cell)) from None
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(explain(exc)) from None
    devices_here = True
    if multirun:
        devices_here = not runs_elsewhere(cfg.hydra.launcher)
        with open_dict(cfg):
            cfg.pop("hydra")
    validate(cfg, devices_here=devices_here)
    check_environment()
    try:
        output_dir = cfg.paths.output_dir
    except OmegaConfBaseException as exc:  # e.g. ${oc.env:...} of an unset variable
        raise ConfigError(explain(exc)) from None
    check_output_dir(output_dir)
    return cfg
