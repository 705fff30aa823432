"""An interrupt stops, and loses nothing: outside SLURM, SIGTERM or SIGINT stops a whole sweep or
search (the running cells save their checkpoints; exit 143 / 130), an interrupted trial is never
told to its study as a value, and no path drops a row a run already wrote (a failed requeue
keeps the cell `preempted`, and a resumed cell keeps its metrics.csv rows)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from pytorch_lightning.callbacks import Callback

from normlab.cell import run_cell
from normlab.pipeline import train
from normlab.sweep import record_failure

LONG_CELLS = [
    "data=synthetic",
    "trainer=debug",
    "trainer.max_steps=600",
    "trainer.val_check_interval=20",
    "threads=1",
]


def sweep(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "normlab.train", "-m", *LONG_CELLS, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(pattern: str, root: Path, process: subprocess.Popen, count: int = 1) -> None:
    """Until `count` files match `pattern` under root (a checkpoint: the cells are part-way)."""
    deadline = time.monotonic() + 120
    while len(list(root.glob(pattern))) < count:
        assert process.poll() is None, f"ended before it could be stopped: {process.stderr.read()}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)


def cells(root: Path) -> dict[str, dict | None]:
    """Each cell folder's result.json (None: no result yet)."""
    found = {}
    for config in root.glob("outputs/multirun/*/*/*/.hydra/overrides.yaml"):
        cell = config.parent.parent
        result = cell / "result.json"
        found[cell.name] = json.loads(result.read_text()) if result.is_file() else None
    return found


def test_sigterm_stops_a_plain_sweep_and_the_rerun_resumes_it(cli_env, train_cli, tmp_path):
    process = sweep(cli_env, "seed=0,1,2")
    wait_for("outputs/multirun/*/*/*/checkpoints/last.ckpt", tmp_path, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    statuses = {name: result and result["status"] for name, result in cells(tmp_path).items()}
    assert list(statuses.values()).count("preempted") == 1  # the cell that was running
    assert "completed" not in statuses.values()  # the sweep did not go on to the next cells
    rerun = train_cli("-m", *LONG_CELLS, "seed=0,1,2")  # main() in-process: no signal to take
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    results = cells(tmp_path)
    assert len(results) == 3 and {r["status"] for r in results.values()} == {"completed"}
    assert sum(r["resumed_from_step"] is not None for r in results.values()) == 1


@pytest.mark.slow  # two stacked sweeps through the CLI: ~30 s
def test_sigint_stops_a_stacked_sweep_and_the_rerun_resumes_every_stack(cli_env, tmp_path):
    process = sweep(cli_env, "hydra/launcher=stacked", "seed=0,1,2,3")
    wait_for("outputs/multirun/*/*/stacks/stack-*/checkpoints/last.ckpt", tmp_path, process, 2)
    process.send_signal(signal.SIGINT)  # as Ctrl+C does to the sweep's command
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert {r and r["status"] for r in cells(tmp_path).values()} == {"preempted"}
    rerun = sweep(cli_env, "hydra/launcher=stacked", "seed=0,1,2,3")
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr[-3000:]
    results = cells(tmp_path).values()
    assert {r["status"] for r in results} == {"completed"}
    assert all(r["resumed_from_step"] is not None for r in results)


@pytest.mark.slow  # two searches through the CLI: ~15 s (the fast test below: the telling)
def test_an_interrupted_trial_is_never_told_and_the_rerun_resumes_it(cli_env, tmp_path):
    command = [
        sys.executable,
        "-m",
        "normlab.train",
        "-m",
        "hparams_search=sgd_tpe",
        "hydra.sweeper.n_trials=2",
        *LONG_CELLS,
    ]
    process = subprocess.Popen(command, env=cli_env, stderr=subprocess.PIPE, text=True)
    wait_for("outputs/multirun/*/*/*/checkpoints/last.ckpt", tmp_path, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    [sweep_dir] = (tmp_path / "outputs" / "multirun" / "default").iterdir()
    backend = optuna.storages.journal.JournalFileBackend(str(sweep_dir / "optuna.journal"))
    storage = optuna.storages.JournalStorage(backend)
    study = optuna.load_study(study_name="default", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.RUNNING]  # told nothing, no 0.0
    done = subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="default", storage=storage)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 2 and all(t.value > 0 for t in complete)
    [interrupted] = study.get_trials(states=(TrialState.FAIL,))
    again = next(t for t in complete if t.params == interrupted.params)  # asked again
    result = json.loads((Path(again.user_attrs["cell"]) / "result.json").read_text())
    assert result["resumed_from_step"] is not None


class SignalAfter(Callback):
    """Sends this process SIGTERM (or raises, `crash`) once training passes `step`."""

    def __init__(self, step: int, crash: bool = False):
        self.step, self.crash, self.done = step, crash, False

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step and not self.done:
            self.done = True
            if self.crash:
                raise RuntimeError("the node went away")
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_failed_requeue_keeps_the_cell_preempted_and_every_row(
    compose_cfg, tmp_path, monkeypatch
):
    cfg = compose_cfg("data=synthetic", "trainer=debug", "trainer.max_steps=120")
    train(cfg, tmp_path / "reference")
    run_dir = tmp_path / "cell"

    def requeue_fails():  # as submitit's requeue raising after too many time-outs
        raise RuntimeError("scontrol requeue: permission denied")

    with monkeypatch.context() as patched:
        patched.setattr("normlab.pipeline.preemption_requeue", lambda: requeue_fails)
        with pytest.raises(RuntimeError, match="permission denied"):
            train(cfg, run_dir, [SignalAfter(60)])
    record_failure(run_dir, "RuntimeError: scontrol requeue: permission denied")  # as a sweep
    result = json.loads((run_dir / "result.json").read_text())
    assert (
        result["status"] == "preempted" and "permission denied" in result["after_preemption_error"]
    )
    run_cell(cfg, run_dir)  # the sweep's re-run of the cell resumes it
    assert json.loads((run_dir / "result.json").read_text())["resumed_from_step"] is not None
    assert (run_dir / "metrics.csv").read_text() == (
        tmp_path / "reference" / "metrics.csv"
    ).read_text()


def test_a_crashed_cell_resumes_with_every_row_it_wrote(compose_cfg, tmp_path):
    cfg = compose_cfg("data=synthetic", "trainer=debug", "trainer.max_steps=120")
    train(cfg, tmp_path / "reference")
    run_dir = tmp_path / "cell"
    with pytest.raises(RuntimeError, match="went away"):
        train(cfg, run_dir, [SignalAfter(75, crash=True)])
    record_failure(run_dir, "RuntimeError: the node went away")  # as a sweep records it
    run_cell(cfg, run_dir)  # the failed attempt is archived, the cell resumes from step 70
    assert json.loads((run_dir / "result.json").read_text())["resumed_from_step"] == 70
    assert (run_dir / "metrics.csv").read_text() == (
        tmp_path / "reference" / "metrics.csv"
    ).read_text()
    assert list(run_dir.glob("attempts/*/result.json"))  # the failed attempt, kept aside


def test_a_preempted_trial_fails_and_is_asked_again_never_told_as_a_value(tmp_path):
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf

    from hydra_plugins.normlab_optuna.sweeper import _tell

    study = optuna.create_study()
    space = {"lr": optuna.distributions.FloatDistribution(0.01, 1.0)}
    trial = study.ask(space)
    cell = tmp_path / "cell"
    cell.mkdir()
    (cell / "result.json").write_text(json.dumps({"status": "preempted", "signal": "SIGTERM"}))
    job = JobReturn(
        hydra_cfg=OmegaConf.create({"hydra": {"runtime": {"output_dir": str(cell)}}}),
        status=JobStatus.COMPLETED,
    )
    job.return_value = 0.0  # what the launcher scores a cell that did not complete
    _tell(study, trial, job)
    # not COMPLETE with 0.0: failed, and its parameters queued to be asked again
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]
    again = study.ask(space)
    assert again.params == trial.params  # asked again: the same cell, which resumes
