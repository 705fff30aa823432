"""A config loader that composes a sweep once per choice of config groups, not once per cell.

Hydra's sweepers compose every cell of a batch to check it can be composed
(`Sweeper.validate_batch_is_legal`), then hand the batch to the launcher, which composes each
cell again: a composition costs ~0.1 s, so a 1,024-cell grid spent minutes composing before any
stack started. The stacked launcher puts this loader in the sweep's `HydraContext` (the sweeper
and the launcher share it). A cell's overrides split into group choices (`norm=batch`,
`regularizer=[l2]`, Hydra's own) and values (`seed=3`, `optimizer.lr=0.1`): Hydra composes each
distinct set of group choices once, and each cell is a copy of that composition with its values
applied as Hydra's composition applies them, and Hydra's bookkeeping of the cell's overrides
(`hydra.overrides.task`, `hydra.job.override_dirname`). A cell the sweeper composed is kept
until the launcher `take`s it. Every other call goes to Hydra's loader.

Hydra's private API is used here and only here: `ConfigLoaderImpl._apply_overrides_to_config`
(how a composition applies value overrides) and `get_overrides_dirname` (how it names them), so
that a cell composed here is the cell Hydra would compose (tests/test_stacked.py compares them).
"""

from __future__ import annotations

import copy
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.config_loader import ConfigLoader
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict


class ComposedOnce(ConfigLoader):
    """Hydra's config loader, composing a sweep's cells once per choice of groups."""

    def __init__(self, loader: ConfigLoader) -> None:
        self.loader = loader
        self.parser = OverridesParser.create()
        self.bases: dict[tuple, DictConfig] = {}  # (master, group choices) -> composition
        self.kept: dict[tuple[int, tuple[str, ...]], DictConfig] = {}
        self._groups: dict[str, bool] = {}

    def is_group_choice(self, override: Override) -> bool:
        """Whether `override` chooses a config group's option (or sets Hydra's own config):
        what decides a composition, rather than a value set in it."""
        if override.is_hydra_override() or override.package is not None:
            return True
        key = override.key_or_group
        if key not in self._groups:
            self._groups[key] = bool(self.loader.get_group_options(key))
        return self._groups[key]

    def base(self, master_config: DictConfig, group_choices: list[str]) -> DictConfig:
        """Hydra's composition of `master_config` with `group_choices` (made once)."""
        key = (id(master_config), tuple(group_choices))
        if key not in self.bases:
            self.bases[key] = self.loader.load_sweep_config(master_config, group_choices)
        return self.bases[key]

    def compose_cell(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        """One cell: a copy of its groups' composition with its values applied."""
        parsed = self.parser.parse_overrides(list(sweep_overrides))
        choices = [o for o in parsed if self.is_group_choice(o)]
        values = [o for o in parsed if not self.is_group_choice(o)]
        cfg = copy.deepcopy(self.base(master_config, [o.input_line for o in choices]))
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        task = [o for o in parsed if not o.is_hydra_override()]
        with open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [o.input_line for o in task]
            dirname = cfg.hydra.job.config.override_dirname
            cfg.hydra.job.override_dirname = get_overrides_dirname(
                overrides=task,
                exclude_keys=list(dirname.exclude_keys),
                item_sep=dirname.item_sep,
                kv_sep=dirname.kv_sep,
            )
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        return cfg

    def load_sweep_config(
        self, master_config: DictConfig, sweep_overrides: list[str]
    ) -> DictConfig:
        """Compose one cell (the sweeper's check) and keep it for `take`."""
        cfg = self.compose_cell(master_config, sweep_overrides)
        self.kept[id(master_config), tuple(sweep_overrides)] = cfg
        return cfg

    def take(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        """The launcher's composition of one cell: the kept one (then forgotten: the launcher
        edits it), else a fresh one."""
        kept = self.kept.pop((id(master_config), tuple(sweep_overrides)), None)
        if kept is not None:
            return kept
        return self.compose_cell(master_config, list(sweep_overrides))

    def load_configuration(
        self,
        config_name: str | None,
        overrides: list[str],
        run_mode: RunMode,
        from_shell: bool = True,
        validate_sweep_overrides: bool = True,
    ) -> DictConfig:
        return self.loader.load_configuration(
            config_name, overrides, run_mode, from_shell, validate_sweep_overrides
        )

    def get_search_path(self) -> Any:
        return self.loader.get_search_path()

    def get_sources(self) -> list[Any]:
        return self.loader.get_sources()

    def list_groups(self, parent_name: str) -> list[str]:
        return self.loader.list_groups(parent_name)

    def get_group_options(
        self,
        group_name: str,
        results_filter: ObjectType | None = ObjectType.CONFIG,
        config_name: str | None = None,
        overrides: list[str] | None = None,
    ) -> list[str]:
        return self.loader.get_group_options(group_name, results_filter, config_name, overrides)

    def compute_defaults_list(
        self, config_name: str | None, overrides: list[str], run_mode: RunMode
    ) -> Any:
        return self.loader.compute_defaults_list(config_name, overrides, run_mode)
