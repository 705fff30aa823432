"""Shared fixtures: compose the real configs (no mocks) and train on tiny budgets."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
# one torch thread per test process (in-process runs and CLI subprocesses alike): the tiny test
# models run as fast on one thread, and 2-thread runs slow down 10x whenever the cores are busy
os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HYDRA_FULL_ERROR", "0")

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from helpers import normlab, run_in_process
from normlab.paths import CONFIG_DIR, REPO_DIR
from normlab.pipeline import train
from normlab.train import main as train_main  # importing it registers the schema, resolvers

TINY = ["data=synthetic", "trainer=debug"]
# 25 steps an epoch, validation (2 batches) every 10 steps, dropout draws from the RNG: the run
# the preemption tests stop and resume (test_reliability.py, test_slurm.py)
SHORT = [*TINY, "trainer.max_steps=60", "data.eval_batch_size=50", "regularizer=[dropout]"]
# the sweep the report and resume tests read: 2 norms x 2 seeds of TINY, one cell at a time
TINY_SWEEP = ["-m", *TINY, "seed=0,1", "norm=batch,none"]


def compose_train(
    root: Path, data_dir: Path, *overrides: str, config_dir: Path = CONFIG_DIR
) -> DictConfig:
    """The composed `train` config, outputs under `root`, data in `data_dir`."""
    with initialize_config_dir(str(config_dir), version_base="1.3"):
        return compose(
            "train",
            overrides=[f"paths.root_dir={root}", f"paths.data_dir={data_dir}", *overrides],
        )


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One data cache (generated MNIST-1D etc.) for the whole session."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def compose_cfg(tmp_path, data_dir):
    """compose_cfg(*overrides) -> the composed `train` config, outputs under tmp_path."""
    return partial(compose_train, tmp_path, data_dir)


@pytest.fixture(scope="session")
def short_reference(tmp_path_factory, data_dir) -> Path:
    """The run folder of SHORT trained once, never interrupted: what every stopped and resumed
    SHORT run must end as (trained once for the session: the same run each time)."""
    root = tmp_path_factory.mktemp("short_reference")
    train(compose_train(root, data_dir, *SHORT), root / "run")
    return root / "run"


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, data_dir) -> Path:
    """NORMLAB_ROOT of TINY_SWEEP run once through `python -m normlab.train` (a real sweep
    process) for the session; tests copy it before they change anything in it."""
    root = tmp_path_factory.mktemp("tiny_sweep")
    done = normlab("normlab.train", *TINY_SWEEP, env=cli_environment(root))
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.fixture
def run_training(compose_cfg, tmp_path):
    """run_training(*overrides) -> (result dict, run folder) of a real training run."""

    def _run(*overrides: str, run_dir: Path | None = None, config_dir: Path = CONFIG_DIR):
        cfg = compose_cfg(*overrides, config_dir=config_dir)
        folder = run_dir or tmp_path / "run"
        return train(cfg, folder), folder

    return _run


def cli_environment(root: Path) -> dict[str, str]:
    """Environment for `python -m normlab.*` subprocesses: outputs (and data) under `root`, W&B
    offline; the tests' own modules (a user's network or data, tests/user_data.py) importable."""
    return dict(
        os.environ,
        NORMLAB_ROOT=str(root),
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        PYTHONPATH=os.pathsep.join([str(REPO_DIR / "src"), str(Path(__file__).parent)]),
    )


@pytest.fixture
def cli_env(tmp_path, data_dir) -> dict[str, str]:
    """`cli_environment` of this test's tmp_path."""
    return cli_environment(tmp_path)


@pytest.fixture
def in_process(capfd):
    """in_process(main, *args, env=...) -> CompletedProcess: a console entry point run in this
    process as its command would run (helpers.run_in_process), with no interpreter to start."""
    return partial(run_in_process, capture=capfd)


@pytest.fixture
def train_cli(in_process, cli_env):
    """train_cli(*args) -> CompletedProcess: `python -m normlab.train ARGS` in this process,
    outputs under tmp_path (`cli_env`)."""
    return partial(in_process, train_main, env=cli_env)
