"""Optuna pruning for a search trial: report val/acc at each validation, stop when pruned.

A trial's cell runs in a launcher job, maybe in another process or on another machine, so the
job reaches its trial through the study's storage: the sweeper (hydra_plugins.normlab_optuna)
sets the storage, study name and trial number in the job's environment (TrialLink).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

MONITOR = "val/acc"
# the study's pruner config (a _target_ dict), kept in the study so every job prunes alike
PRUNER_ATTR = "normlab_pruner"


def open_storage(spec: str):
    """An Optuna storage: an RDB URL ("sqlite:///...") as is, anything else a journal file."""
    if "://" in spec:
        return spec
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(spec))


@dataclass(frozen=True)
class TrialLink:
    """Where a job finds its trial: the study's storage, the study's name, the trial number."""

    storage: str
    study: str
    number: int

    ENV = ("NORMLAB_OPTUNA_STORAGE", "NORMLAB_OPTUNA_STUDY", "NORMLAB_OPTUNA_TRIAL")

    def env(self) -> dict[str, str]:
        """The job environment that names this trial."""
        return dict(zip(self.ENV, (self.storage, self.study, str(self.number)), strict=True))

    @classmethod
    def from_env(cls) -> TrialLink | None:
        """The trial this job runs, or None outside an Optuna search."""
        storage, study, number = (os.environ.get(name) for name in cls.ENV)
        if not (storage and study and number):
            return None
        return cls(storage, study, int(number))

    def open(self):
        """The live optuna.Trial, judged by the study's own pruner."""
        import optuna
        from hydra.utils import instantiate

        storage = optuna.storages.get_storage(open_storage(self.storage))
        study_id = storage.get_study_id_from_name(self.study)
        pruner_cfg = storage.get_study_user_attrs(study_id).get(PRUNER_ATTR)
        study = optuna.load_study(
            study_name=self.study,
            storage=storage,
            # the job never samples; RandomSampler keeps the Trial constructor from modelling
            sampler=optuna.samplers.RandomSampler(),
            pruner=instantiate(pruner_cfg) if pruner_cfg else optuna.pruners.NopPruner(),
        )
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
        return optuna.trial.Trial(study, trial_id)


class Pruned(Exception):
    """The study's pruner stopped this trial: its val/acc fell behind the other trials'."""

    def __init__(self, step: int, value: float):
        super().__init__(f"pruned at step {step} ({MONITOR}={value:.4f})")
        self.step = step


class OptunaPruning(Callback):
    """Reports val/acc to the trial at each validation (step = global step); raises Pruned when
    the study's pruner says so. Rank 0 reports and decides, every rank stops."""

    def __init__(self, link: TrialLink):
        self.link = link
        self.trial = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.trial = self.link.open()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a search trial trains solo: its one member's value
        if trainer.sanity_checking or MONITOR not in pl_module.latest:
            return
        value, step = float(pl_module.latest[MONITOR][0]), trainer.global_step
        prune = False
        if self.trial is not None:
            self.trial.report(value, step)
            prune = self.trial.should_prune()
        if trainer.strategy.broadcast(prune, src=0):
            raise Pruned(step, value)
