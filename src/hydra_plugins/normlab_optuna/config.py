"""The sweeper's typed config and its sampler and pruner options, in Hydra's ConfigStore.

Select it with `override /hydra/sweeper: normlab_optuna` (conf/hparams_search/*.yaml);
`hydra/sweeper/sampler` is tpe | random, `hydra/sweeper/pruner` is median | hyperband | none.
"""

# no `from __future__ import annotations`: Hydra runs this module before it is in sys.modules,
# where dataclasses cannot resolve string annotations
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TPESamplerConf:
    """optuna.samplers.TPESampler: random draws for n_startup_trials, then model-based."""

    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    n_startup_trials: int = 10
    multivariate: bool = False


@dataclass
class RandomSamplerConf:
    """optuna.samplers.RandomSampler: the baseline a model-based search must beat."""

    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class MedianPrunerConf:
    """optuna.pruners.MedianPruner: stop a trial whose val/acc at a step is below the median of
    the earlier trials' val/acc at that step."""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5  # trials that always run to the end, so there is a median
    n_warmup_steps: int = 0  # training steps before a trial can be stopped
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class HyperbandPrunerConf:
    """optuna.pruners.HyperbandPruner; resources are training steps (val/acc is reported at each
    validation, with trainer.global_step as the step)."""

    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"  # int, or "auto": the steps of the first trial that completes
    reduction_factor: int = 3


@dataclass
class NoPrunerConf:
    """optuna.pruners.NopPruner: every trial runs to the end (val/acc is still reported)."""

    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class NormlabOptunaSweeperConf:
    """hydra.sweeper: one Optuna study per sweep folder, resumable, failure-tolerant."""

    _target_: str = "hydra_plugins.normlab_optuna.sweeper.NormlabOptunaSweeper"
    # the sampler and pruner are built by the sweeper, which re-seeds the sampler on resume
    _recursive_: bool = False
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])
    sampler: Any = MISSING
    pruner: Any = MISSING
    direction: str = "maximize"  # of the value each job returns (val/acc_best), or "minimize"
    study_name: str = "normlab"
    # null: a journal file, <sweep dir>/optuna.journal, so re-running the same command resumes
    # the study; a path: a journal file there (shared by several sweeps); "sqlite:///...": SQL
    storage: str | None = None
    n_trials: int = 20  # completed or pruned trials the study ends with (a failed cell: 0.0)
    n_jobs: int = 1  # trials asked and launched together (hydra/launcher=parallel: at once)
    params: dict[str, str] = field(default_factory=dict)  # key: Hydra sweep (interval, choice...)


def register_configs() -> None:
    """The sweeper under hydra/sweeper=normlab_optuna, with its sampler and pruner groups."""
    store = ConfigStore.instance()
    store.store(group="hydra/sweeper", name="normlab_optuna", node=NormlabOptunaSweeperConf)
    for name, node in (("tpe", TPESamplerConf), ("random", RandomSamplerConf)):
        store.store(group="hydra/sweeper/sampler", name=name, node=node)
    for name, node in (
        ("median", MedianPrunerConf),
        ("hyperband", HyperbandPrunerConf),
        ("none", NoPrunerConf),
    ):
        store.store(group="hydra/sweeper/pruner", name=name, node=node)


register_configs()  # Hydra imports this module when it scans the hydra_plugins namespace
