"""Hyperparameter search: the Optuna presets run real trials through the CLI
(hydra_plugins.normlab_optuna: ask/tell on Optuna 5, pruning, a resumable journal)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.normlab_optuna._space import search_space
from normlab.config.errors import ConfigError
from normlab.config.validate import validate
from normlab.paths import CONFIG_DIR


def search(*overrides: str) -> list[str]:
    """The command line of a search on the CLI."""
    return [sys.executable, "-m", "normlab.train", "-m", "hparams_search=sgd_tpe", *overrides]


def run_search(env: dict[str, str], *overrides: str) -> None:
    """Run a search to its end; it must exit 0."""
    done = subprocess.run(
        search(*overrides), capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]


def the_sweep(root: Path) -> Path:
    """The one sweep folder under a test's outputs."""
    [sweep] = (root / "outputs" / "multirun" / "default").iterdir()
    return sweep


def load_study(sweep: Path) -> optuna.Study:
    """The study a search kept in its sweep folder."""
    backend = optuna.storages.journal.JournalFileBackend(str(sweep / "optuna.journal"))
    return optuna.load_study(study_name="default", storage=optuna.storages.JournalStorage(backend))


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Completed and pruned trials (a failed cell is a completed trial scoring 0.0)."""
    return study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))


def test_four_parallel_trials_complete_and_score_failed_trials_zero(cli_env, tmp_path):
    # data.batch_size=5000 exceeds the synthetic training set: those trials fail (DataError).
    # Two trials at a time in joblib worker processes, which reach their trials through the
    # journal to report val/acc.
    run_search(
        cli_env,
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra/launcher=parallel",
        "data=synthetic",
        "trainer=debug",
        "data.batch_size=choice(32,5000)",
    )
    sweep = the_sweep(tmp_path)
    results = [json.loads(path.read_text()) for path in sweep.glob("*/result.json")]
    assert len(results) == 4
    trials = load_study(sweep).trials
    assert [trial.state for trial in trials] == [TrialState.COMPLETE] * 4
    reported = [trial for trial in trials if trial.params["data.batch_size"] == 32]
    assert reported and all(trial.intermediate_values for trial in reported)
    assert {trial.value for trial in trials if trial.params["data.batch_size"] == 5000} == {0.0}
    statuses = sorted(result["status"] for result in results)
    assert "completed" in statuses and "failed" in statuses, statuses
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    completed = [r["val/acc_best"] for r in results if r["status"] == "completed"]
    assert best["best_value"] == pytest.approx(max(completed))
    assert set(best["best_params"]) == {
        "optimizer.lr",
        "search.one_minus_momentum",
        "regularizer.weight_decay.value",
        "data.batch_size",
    }


@pytest.mark.parametrize(
    ("preset", "sampler"), [("sgd_tpe", "TPESampler"), ("sgd_random", "RandomSampler")]
)
def test_search_presets_sample_log_scale_spaces(preset, sampler):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"hparams_search={preset}", "search.one_minus_momentum=0.01"],
            return_hydra_config=True,
        )
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.normlab_optuna.sweeper.NormlabOptunaSweeper"
    assert sweeper.pruner._target_ == "optuna.pruners.MedianPruner"
    assert sweeper.sampler._target_.endswith(sampler) and sweeper.direction == "maximize"
    assert sweeper.params["optimizer.lr"] == "tag(log, interval(1e-4, 1))"
    assert sweeper.params["search.one_minus_momentum"] == "tag(log, interval(1e-3, 1e-1))"
    assert sweeper.params["regularizer.weight_decay.value"].startswith("tag(log,")
    assert cfg.optimizer.momentum == pytest.approx(0.99)  # momentum = 1 - the searched gap


def test_search_space_samples_log_intervals_and_choices_and_keeps_fixed_overrides():
    space, fixed = search_space(
        ["optimizer.lr=tag(log, interval(1e-4, 1))", "data=digits", "seed=range(0,3)", "seed=1"]
    )
    assert space == {"optimizer.lr": FloatDistribution(1e-4, 1, log=True)}
    assert fixed == ["data=digits", "seed=1"]  # a later override of a key wins
    space, _ = search_space(
        ["data.batch_size=choice(32,64)", "model.depth=tag(int, interval(2, 5))"]
    )
    assert space == {
        "data.batch_size": CategoricalDistribution([32, 64]),
        "model.depth": IntDistribution(2, 5),
    }


def test_searched_momentum_is_checked_like_any_momentum(compose_cfg):
    with pytest.raises(ConfigError, match=r"optimizer\.momentum"):
        validate(compose_cfg("hparams_search=sgd_tpe", "search.one_minus_momentum=2"))


def test_killed_pruning_study_resumes_to_six_distinct_finished_trials(cli_env, tmp_path, train_cli):
    # 4 validations per trial; after 2 trials the median pruner stops the trials that fall behind
    overrides = (
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.pruner.n_startup_trials=2",
        "data=digits",
        "trainer=debug",
        "trainer.max_steps=40",
    )
    first = subprocess.Popen(
        search(*overrides),
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    multirun = tmp_path / "outputs" / "multirun"
    try:
        deadline = time.monotonic() + 300
        # a 4th cell has started once 3 trials were told (one trial at a time): kill it mid-run
        while len(list(multirun.glob("*/*/*/config.yaml"))) < 4:
            assert first.poll() is None, "the search ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    sweep = the_sweep(tmp_path)
    killed = load_study(sweep)
    assert len(finished_trials(killed)) == 3
    assert [t.number for t in killed.get_trials(states=(TrialState.RUNNING,))] == [3]

    # the same command continues the study (through main() in this process)
    done = train_cli("-m", "hparams_search=sgd_tpe", *overrides)
    assert done.returncode == 0, done.stderr[-3000:]

    study = load_study(sweep)
    trials, finished = study.trials, finished_trials(study)
    assert len(finished) == 6
    assert len({t.number for t in finished}) == len({str(t.params) for t in finished}) == 6
    assert any(t.state == TrialState.PRUNED for t in finished)
    for trial in finished:
        status = json.loads((Path(trial.user_attrs["cell"]) / "result.json").read_text())["status"]
        assert status == ("pruned" if trial.state == TrialState.PRUNED else "completed")
    # a trial cut off by the kill failed, and its parameters were asked again (same cell)
    for trial in (t for t in trials if t.state == TrialState.FAIL):
        assert any(t.params == trial.params for t in finished)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert "pruned" in (sweep / "report" / "report.md").read_text()
