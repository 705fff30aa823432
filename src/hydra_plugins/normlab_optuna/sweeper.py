"""The sweep loop: ask n_jobs trials, launch them through any Hydra launcher, tell their results.

The study lives in a storage (a journal file in the sweep folder unless told otherwise), so
re-running the same command continues it up to n_trials; a trial left running by a killed sweep
is failed and its parameters asked again, so its cell resumes from its checkpoint. A job reaches
its trial through the storage (normlab.callbacks.pruning.TrialLink) to report val/acc and be
pruned; a pruned cell records status "pruned", a failed cell scores 0.0.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

OWNER_ATTR = "normlab_sweeper"  # host and pid of the sweep that asked a trial


class NormlabOptunaSweeper(Sweeper):
    """hydra/sweeper=normlab_optuna (config: hydra_plugins.normlab_optuna.config)."""

    def __init__(self, sampler, pruner, direction, study_name, storage, n_trials, n_jobs, params):
        self.sampler_cfg, self.pruner_cfg = sampler, pruner
        self.direction, self.study_name, self.storage = direction, study_name, storage
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.params = dict(params or {})

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Keep the config; build the launcher that will run the trials' jobs."""
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        """Run the study to n_trials finished trials; write optimization_results.yaml."""
        import optuna

        from hydra_plugins.normlab_optuna._space import search_space
        from normlab.callbacks.pruning import PRUNER_ATTR, TrialLink, open_storage

        space, fixed = search_space([*(f"{k}={v}" for k, v in self.params.items()), *arguments])
        sweep_dir = Path(self.config.hydra.sweep.dir).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # what the report reads back
        spec = storage_spec(self.storage, sweep_dir)
        storage = optuna.storages.get_storage(open_storage(spec))
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=self._sampler(storage),
            pruner=_instantiate(self.pruner_cfg),
            direction=self.direction,
            load_if_exists=True,
        )
        study.set_user_attr(PRUNER_ATTR, OmegaConf.to_container(self.pruner_cfg, resolve=True))
        _retry_interrupted(study)
        log.info("study %s in %s: %s", self.study_name, spec, _state_counts(study))
        while (to_go := self.n_trials - _budget_used(study)) > 0:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, to_go))]
            jobs = []
            for trial in trials:
                trial.set_user_attr(OWNER_ATTR, {"host": socket.gethostname(), "pid": os.getpid()})
                link = TrialLink(spec, self.study_name, trial.number)
                params = [f"{key}={value}" for key, value in trial.params.items()]
                env = [f"++hydra.job.env_set.{k}={_quoted(v)}" for k, v in link.env().items()]
                jobs.append([*fixed, *params, *env])
            returns = self.launcher.launch(jobs, initial_job_idx=trials[0].number)
            for trial, job in zip(trials, returns, strict=True):
                _tell(study, trial, job)
        _write_results(study, sweep_dir / "optimization_results.yaml")

    def _sampler(self, storage):
        """The sampler; a resumed study offsets its seed by the trials it has, so a re-run
        draws new points instead of repeating the first run's, and stays reproducible."""
        seed = self.sampler_cfg.get("seed")
        if seed is None:
            return _instantiate(self.sampler_cfg)
        try:
            earlier = len(storage.get_all_trials(storage.get_study_id_from_name(self.study_name)))
        except KeyError:  # a new study
            earlier = 0
        return _instantiate(self.sampler_cfg, seed=seed + earlier)


def storage_spec(storage: str | None, sweep_dir: Path) -> str:
    """The study's storage as every job can open it: an RDB URL, or a journal file's absolute
    path (the sweep folder's optuna.journal by default)."""
    if storage and "://" in storage:
        return storage
    return str(Path(storage).absolute() if storage else sweep_dir / "optuna.journal")


def _instantiate(cfg: DictConfig, **kwargs: Any):
    from hydra.utils import instantiate

    return instantiate(cfg, **kwargs)


def _quoted(value: str) -> str:
    """A Hydra override value that keeps any path or name as one string."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _tell(study, trial, job) -> None:
    """Tell a job's outcome: pruned, or its score (0.0 for a failed cell); a job that raised
    outside its cell (a framework error) fails the trial and stops the sweep. A preempted trial
    is never told as a value: it fails and is asked again, and its cell resumes."""
    from hydra.core.utils import JobStatus
    from optuna.trial import TrialState

    from normlab.sweep import cell_status

    if job.status != JobStatus.COMPLETED:
        study.tell(trial, state=TrialState.FAIL)
        job.return_value  # noqa: B018  (raises the job's error, with its traceback)
    cell = Path(job.hydra_cfg.hydra.runtime.output_dir)
    trial.set_user_attr("cell", str(cell))
    status = cell_status(cell)
    if status == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    elif status == "preempted":
        study.tell(trial, state=TrialState.FAIL)
        study.enqueue_trial(trial.params)
        log.warning("trial %d was preempted: asked again", trial.number)
    else:
        study.tell(trial, float(job.return_value))


def _retry_interrupted(study) -> None:
    """Fail the trials a dead sweep on this host left running, and ask their parameters again
    (the same parameters find the same cell folder, which resumes from its checkpoint). A trial
    without an owner lost its sweep between being asked and being launched."""
    from optuna.trial import TrialState

    from normlab.sweep import _pid_alive  # the liveness test of stale cell locks, reused

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get(OWNER_ATTR)
        if not owner or (
            owner["host"] == socket.gethostname()
            and (owner["pid"] == os.getpid() or not _pid_alive(owner["pid"]))
        ):
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            study.enqueue_trial(trial.params)
            log.warning("trial %d was interrupted: asked again", trial.number)


def _budget_used(study) -> int:
    """Trials that count toward n_trials: completed, pruned, and running in another live sweep
    (failed trials were interrupted, and asked again, or stopped the sweep with an error)."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return len(study.get_trials(deepcopy=False, states=states))


def _state_counts(study) -> dict[str, int]:
    """Trials by state, e.g. {"complete": 4, "pruned": 2}."""
    return dict(Counter(trial.state.name.lower() for trial in study.get_trials(deepcopy=False)))


def _write_results(study, path: Path) -> None:
    """optimization_results.yaml: the best trial's parameters and value, trials by state."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = study.best_trial if complete else None
    results = {
        "name": "optuna",
        "study_name": study.study_name,
        "best_params": best.params if best else None,
        "best_value": best.value if best else None,
        "best_trial": best.number if best else None,
        "trials": _state_counts(study),
    }
    OmegaConf.save(OmegaConf.create(results), path)
    log.info("best value %s with %s", results["best_value"], results["best_params"])
