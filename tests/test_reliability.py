"""Reliability: resume after SIGKILL / SIGTERM, determinism, divergence, W&B outage, sweeps.

The stopped runs are real processes (a signal ends a process); the same command run again,
which resumes them, runs through the CLI's main() in this process, and so do most sweeps here
(a sweep as a real process: conftest.py's tiny_sweep)."""

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Callback

from conftest import SHORT, TINY, TINY_SWEEP, cli_environment, compose_train
from helpers import normlab, same_result, start_training, wait_for_step
from normlab.config.resolvers import register_resolvers
from normlab.pipeline import train
from normlab.reproduce import main as reproduce_main
from normlab.train import main as train_main

# 1,000 steps of the default model on synthetic data (175 steps an epoch), checkpoints every 100
# steps: long enough to be stopped part-way, mid-epoch
LONG = [
    "data=synthetic",
    "data.num_samples=6000",
    "trainer.max_steps=1000",
    "trainer.val_check_interval=100",
    "regularizer=[dropout]",
    "threads=1",
]
KILLED_AT, PREEMPTED_AT = 500, 300  # steps reached before SIGKILL, SIGTERM


def start(run_dir: Path, env: dict, *extra: str) -> subprocess.Popen:
    return start_training(env, *LONG, *extra, f"hydra.run.dir={run_dir}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir) -> Path:
    """The reference: the same run, never interrupted (in this process: the same numbers)."""
    root = tmp_path_factory.mktemp("reference")
    train(compose_train(root, data_dir, *LONG), root / "full")
    return root / "full"


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> dict:
    """Two LONG runs started at once: one SIGTERMed after PREEMPTED_AT steps, the other
    SIGKILLed after KILLED_AT. Their folders, environment, and the SIGTERMed one's exit."""
    root = tmp_path_factory.mktemp("stopped")
    env = cli_environment(root)
    killed_dir, preempted_dir = root / "killed", root / "preempted"
    killed, preempted = start(killed_dir, env), start(preempted_dir, env)
    try:
        wait_for_step(preempted_dir, PREEMPTED_AT, preempted)
        preempted.send_signal(signal.SIGTERM)
        wait_for_step(killed_dir, KILLED_AT, killed)
        killed.kill()  # SIGKILL: no chance to clean up
        killed.wait()
        _, stderr = preempted.communicate(timeout=60)
    finally:
        for process in (killed, preempted):
            if process.poll() is None:
                process.kill()
                process.wait()
    return {
        "env": env,
        "killed": killed_dir,
        "preempted": preempted_dir,
        "preempted_exit": (preempted.returncode, stderr),
    }


def test_resume_after_sigkill_matches_an_uninterrupted_run(uninterrupted, stopped, in_process):
    run_dir = stopped["killed"]
    args = (*LONG, f"hydra.run.dir={run_dir}")
    done = in_process(train_main, *args, env=stopped["env"])
    assert done.returncode == 0, done.stderr
    result = json.loads((run_dir / "result.json").read_text())
    assert result["resumed_from_step"] >= KILLED_AT
    assert (run_dir / "metrics.csv").read_text() == (uninterrupted / "metrics.csv").read_text()
    same_result(run_dir, uninterrupted)


def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes(uninterrupted, stopped, in_process):
    run_dir = stopped["preempted"]
    returncode, stderr = stopped["preempted_exit"]
    assert returncode == 143, stderr
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "preempted"
    assert "Traceback" not in stderr
    args = (*LONG, f"hydra.run.dir={run_dir}")
    done = in_process(train_main, *args, env=stopped["env"])
    assert done.returncode == 0, done.stderr
    same_result(run_dir, uninterrupted)
    assert (run_dir / "metrics.csv").read_text() == (uninterrupted / "metrics.csv").read_text()


class SigtermAt(Callback):
    """Sends this process SIGTERM from `hook` at `step` (as SLURM would, at an awkward moment),
    or at the first such hook after it."""

    def __init__(self, hook: str, step: int):
        self.hook, self.step, self.sent = hook, step, False

    def _maybe_send(self, trainer, hook: str) -> None:
        if hook == self.hook and trainer.global_step >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)

    def on_train_batch_end(self, trainer, *args) -> None:
        self._maybe_send(trainer, "train step")

    def on_validation_batch_end(self, trainer, *args) -> None:
        self._maybe_send(trainer, "mid-validation")

    def on_train_epoch_end(self, trainer, *args) -> None:
        self._maybe_send(trainer, "epoch end")


def preempt_and_resume(
    compose_cfg, tmp_path, overrides: list[str], sigterm: SigtermAt, reference: Path
) -> dict:
    """Train `overrides` with `sigterm` and once more to resume; assert the resumed run ends
    with the uninterrupted `reference` run's result and metrics.csv. The first (preempted)
    attempt's result."""
    run_dir = tmp_path / "preempted"
    first = train(compose_cfg(*overrides), run_dir, [sigterm])
    assert first["status"] == "preempted"
    resumed = train(compose_cfg(*overrides), run_dir)
    assert resumed["resumed_from_step"] == first["steps"]
    same_result(run_dir, reference)
    assert (run_dir / "metrics.csv").read_text() == (reference / "metrics.csv").read_text()
    return first


@pytest.mark.parametrize(
    ("hook", "step"),
    [
        ("train step", 13),
        ("mid-validation", 10),
        ("epoch end", 25),
        ("train step", 24),
    ],
)
def test_sigterm_at_any_point_resumes_into_the_uninterrupted_run(
    compose_cfg, tmp_path, short_reference, hook, step
):
    first = preempt_and_resume(compose_cfg, tmp_path, SHORT, SigtermAt(hook, step), short_reference)
    assert first["steps"] < 60


def test_a_stop_at_a_logged_windows_end_keeps_its_row(compose_cfg, tmp_path):
    # validation every 20 steps, windows logged every 5: a SIGTERM after step 9 stops the run at
    # step 10, the end of a logged window, whose row must reach metrics.csv before the stop
    overrides = [*SHORT, "trainer.val_check_interval=20"]
    train(compose_cfg(*overrides), tmp_path / "reference")
    first = preempt_and_resume(
        compose_cfg, tmp_path, overrides, SigtermAt("train step", 9), tmp_path / "reference"
    )
    assert first["steps"] == 10


def test_sigterm_during_the_last_step_lets_the_run_finish(compose_cfg, tmp_path, short_reference):
    reference = json.loads((short_reference / "result.json").read_text())
    finished = train(compose_cfg(*SHORT), tmp_path / "run", [SigtermAt("mid-validation", 60)])
    assert finished["status"] == "completed"
    assert finished["test/acc"] == reference["test/acc"]


def test_same_config_and_seed_give_bit_identical_metrics(run_training, tmp_path):
    overrides = [*TINY, "regularizer=[dropout,augment]", "data=digits", "model=cnn"]
    run_training(*overrides, run_dir=tmp_path / "a")
    run_training(*overrides, run_dir=tmp_path / "b")
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (
        tmp_path / "b" / "metrics.csv"
    ).read_bytes()
    run_training(*overrides, "seed=1", run_dir=tmp_path / "c")
    assert (tmp_path / "a" / "metrics.csv").read_bytes() != (
        tmp_path / "c" / "metrics.csv"
    ).read_bytes()


def test_reproduce_command_confirms_a_finished_run(run_training, cli_env, tmp_path, in_process):
    _, run_dir = run_training(*TINY)
    done = in_process(reproduce_main, str(run_dir), env=cli_env)
    assert done.returncode == 0, done.stderr
    assert "SAME" in done.stdout
    metrics = run_dir / "metrics.csv"
    metrics.write_text(metrics.read_text().replace("0.", "0.9", 1))  # tamper with one number
    done = in_process(reproduce_main, str(run_dir), env=cli_env)
    assert done.returncode == 1 and "DIFFERENT" in done.stdout


def test_divergence_stops_cleanly_with_its_step(cli_env, tmp_path):
    done = normlab(
        "normlab.train",
        *TINY,
        "norm=none",
        "activation=relu",
        "optimizer.lr=1e9",
        "init=normal",
        "init.weight.std=10",
        f"hydra.run.dir={tmp_path / 'run'}",
        env=cli_env,
    )
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("normlab: diverged")
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "diverged" and result["diverged_at_step"] >= 0


def test_wandb_that_cannot_start_leaves_csv_logging(run_training, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "online")
    result, run_dir = run_training(*TINY, "logger=wandb", "logger.wandb.mode=online")
    assert result["status"] == "completed"
    assert "val/acc" in (run_dir / "metrics.csv").read_text()


def cells(sweep_root: Path) -> dict[str, Path]:
    [sweep] = [p for p in sweep_root.iterdir() if p.is_dir()]
    return {p.name: p for p in sweep.iterdir() if (p / ".hydra").is_dir()}  # not report/


def test_rerunning_a_sweep_runs_only_missing_or_failed_cells(tiny_sweep, tmp_path, train_cli):
    shutil.copytree(tiny_sweep, tmp_path, dirs_exist_ok=True)  # the session's sweep, left as is
    found = cells(tmp_path / "outputs" / "multirun" / "default")
    assert len(found) == 4
    before = {name: (p / "result.json").stat().st_mtime_ns for name, p in found.items()}
    killed, failed = sorted(found)[:2]
    (found[killed] / "result.json").unlink()  # as if killed before it finished
    (found[failed] / "result.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    assert train_cli(*TINY_SWEEP).returncode == 0  # the same command again
    after = {name: (p / "result.json").stat().st_mtime_ns for name, p in found.items()}
    for name in found:
        status = json.loads((found[name] / "result.json").read_text())["status"]
        assert status == "completed"
        assert (after[name] == before[name]) == (name not in (killed, failed)), name
    assert list((found[failed] / "attempts").glob("*/result.json"))  # the failed attempt is kept


def test_path_overrides_leave_one_flat_folder_per_cell(train_cli, tmp_path):
    # a "/" in the folder name used to nest each cell under folders named after the path
    out = tmp_path / "elsewhere" / "out"
    done = train_cli("-m", *TINY, "seed=0,1", "name=paths_check", f"paths.output_dir={out}")
    assert done.returncode == 0, done.stderr
    found = cells(out / "multirun" / "paths_check")
    # where files go is no part of a cell's name
    assert sorted(found) == [f"data=synthetic,seed={seed},trainer=debug" for seed in (0, 1)]
    assert "2/2 cells done" in done.stdout


def test_a_slash_in_a_cell_name_is_escaped():
    register_resolvers()
    cell = {"dirname": "data=a/b,seed=0", "task": ["data=a/b", "seed=0"], "params": None}
    name = OmegaConf.create({**cell, "n": "${cell_folder:${dirname},${task},${params}}"}).n
    assert name == "data=a%2Fb,seed=0"


# 14 result-changing overrides besides the swept seed: ~330 bytes as one folder name, over
# the 255 bytes a file name may hold (the sweep used to fail with "File name too long")
LONG_COMMAND_LINE = [
    "data.num_samples=1200",
    "data.num_features=24",
    "data.num_classes=4",
    "data.val_size=200",
    "data.eval_batch_size=200",
    "data.split_seed=3",
    "model.width=32",
    "model.depth=2",
    "norm.momentum=0.2",
    "norm.eps=0.0001",
    "activation=relu",
    "optimizer.lr=0.05",
    "trainer.log_every_n_steps=5",
    "norm.placement=after_activation",
]


def test_a_long_command_line_keeps_cell_folder_names_short_and_stable(train_cli, tmp_path):
    args = ["-m", *TINY, *LONG_COMMAND_LINE, "seed=0,1", "name=long_check"]
    assert len(",".join(sorted(LONG_COMMAND_LINE)).encode()) > 255
    first = train_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    found = cells(tmp_path / "outputs" / "multirun" / "long_check")
    assert len(found) == 2
    for name, cell in found.items():
        assert len(name.encode()) <= 200, name
        seed = json.loads((cell / "result.json").read_text())["seed"]
        assert name.startswith(f"seed={seed}--"), name  # the swept key, then a hash of them all
        # the full overrides stay with the cell
        assert set(LONG_COMMAND_LINE) < set(OmegaConf.load(cell / ".hydra" / "overrides.yaml"))
    again = train_cli(*args)  # the same command finds its cells
    assert again.returncode == 0, again.stderr[-2000:]
    assert cells(tmp_path / "outputs" / "multirun" / "long_check").keys() == found.keys()
    log = again.stdout + again.stderr
    assert log.count("already completed, skipped") == 2, log


def test_a_cell_folder_name_is_its_overrides_when_they_fit_else_the_swept_ones_and_a_hash(
    monkeypatch,
):
    from normlab.sweep import SWEPT_KEYS_ENV, cell_folder_name

    short = ["norm=batch", "seed=0"]
    assert cell_folder_name("norm=batch,seed=0", short, []) == "norm=batch,seed=0"
    long = [f"data.root=/a/{'x' * 250}", "seed=3", "threads=1"]
    dirname = ",".join(long[:2])
    monkeypatch.delenv(SWEPT_KEYS_ENV, raising=False)
    unnamed = cell_folder_name(dirname, long, [])
    assert unnamed.startswith("cell--") and len(unnamed.encode()) <= 200
    by_sweeper = cell_folder_name(dirname, long, ["seed"])  # a preset's hydra.sweeper.params
    monkeypatch.setenv(SWEPT_KEYS_ENV, "seed,threads")  # threads changes no result: not named
    by_command_line = cell_folder_name(dirname, long, [])
    assert by_sweeper == by_command_line == f"seed=3--{unnamed.removeprefix('cell--')}"
    monkeypatch.setenv(SWEPT_KEYS_ENV, "data.root,seed")  # the swept part itself too long: cut
    cut = cell_folder_name(dirname, long, [])
    assert len(cut.encode()) <= 200 and cut.endswith(unnamed.removeprefix("cell"))
    assert cell_folder_name(dirname.replace("3", "4"), long, []) != cut  # other overrides


def test_a_second_run_in_a_folder_in_use_refuses_in_one_line(train_cli, tmp_path):
    from normlab.sweep import CellLock

    run_dir = tmp_path / "shared"
    run_dir.mkdir()
    (run_dir / "metrics.csv").write_text("epoch,step,train/loss\n0,0,2.3\n")
    first = CellLock(run_dir)  # a run in progress in this folder: this process holds its lease
    assert first.acquire()
    try:
        done = train_cli(*TINY, f"hydra.run.dir={run_dir}")
    finally:
        first.release()
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        f"normlab: config error: hydra.run.dir={run_dir}: another normlab run is using this "
        f"folder (pid {os.getpid()} on "
    ), lines[0]
    # the first run's files are untouched: no metrics written over, no result recorded
    assert (run_dir / "metrics.csv").read_text() == "epoch,step,train/loss\n0,0,2.3\n"
    assert not (run_dir / "result.json").exists()


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(train_cli, tmp_path):
    done = train_cli("-m", *TINY, "data=synthetic,mnist", "data.download=false", "name=fail_check")
    assert done.returncode == 0, done.stderr
    statuses = {
        name: json.loads((p / "result.json").read_text())
        for name, p in cells(tmp_path / "outputs" / "multirun" / "fail_check").items()
    }
    assert sorted(r["status"] for r in statuses.values()) == ["completed", "failed"]
    assert any("mnist files not found" in r.get("error", "") for r in statuses.values())
