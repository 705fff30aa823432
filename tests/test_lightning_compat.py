"""Lightning's private API as normlab uses it (normlab.lit.lightning_compat): one test per use, on
real tiny fits, so a Lightning release that moves one fails here by name."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch
import wandb
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger, WandbLogger
from torch import nn

from normlab.data.batches import ResidentBatches
from normlab.lit.lightning_compat import (
    FX_NAME_ATTRIBUTE,
    DDPStrategyWithLauncher,
    ScriptLauncher,
    UnsupportedLightning,
    check_lightning_version,
    drop_wandb_init_argument,
    is_attached,
    present_as_dataloader,
    validation_due_after_batch,
    write_step_metrics,
)

BATCHES = 4  # training batches an epoch


class RowsLogger(Logger):
    """Keeps the logged rows in memory: (step, metrics)."""

    def __init__(self):
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "rows"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append((step, dict(metrics)))

    def steps(self, key: str = "loss") -> list[int]:
        return [step for step, metrics in self.rows if key in metrics]


class Tiny(pl.LightningModule):
    """A linear layer on 4 batches of 2; `on_batch(module, batch_idx)` runs in training_step."""

    def __init__(self, on_batch=None):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(3, 1)
        self.on_batch = on_batch

    def training_step(self, batch, batch_idx):
        if self.on_batch is not None:
            self.on_batch(self, batch_idx)
        loss = self.layer(batch[0]).square().mean()
        self.log("loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val", self.layer(batch[0]).square().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return loader(shuffle=True)

    def val_dataloader(self):
        return loader(shuffle=False)


def loader(shuffle: bool) -> ResidentBatches:
    x = torch.randn(2 * BATCHES, 3, generator=torch.Generator().manual_seed(0))
    return ResidentBatches(x, torch.zeros(2 * BATCHES), 2, shuffle=shuffle, drop_last=True)


def fit(module: pl.LightningModule, callbacks=(), ckpt_path=None, **trainer_args) -> pl.Trainer:
    """A real CPU fit with no bar, summary or checkpointing; logs into a RowsLogger."""
    args = {"max_steps": BATCHES, "log_every_n_steps": 1, "num_sanity_val_steps": 0, **trainer_args}
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=RowsLogger(),
        callbacks=list(callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **args,
    )
    trainer.fit(module, ckpt_path=ckpt_path)
    return trainer


class Record(Callback):
    """Global steps at which validation started, and `answer(trainer)` at every batch end."""

    def __init__(self, answer=None):
        self.answer, self.answers, self.validated_at = answer, [], []

    def on_train_batch_end(self, trainer, *args) -> None:
        if self.answer is not None:
            self.answers.append(self.answer(trainer))

    def on_validation_start(self, trainer, *args) -> None:
        self.validated_at.append(trainer.global_step)


def test_version_check_names_the_supported_range_and_the_fix():
    check_lightning_version(pl.__version__)  # the installed one (the import already checked)
    check_lightning_version("2.6.0")
    for version in ("2.5.9", "2.7.0", "3.6.0"):
        with pytest.raises(UnsupportedLightning) as raised:
            check_lightning_version(version)
        assert str(raised.value) == (
            f"normlab supports pytorch-lightning >=2.6,<2.7 (found {version}); "
            'pip install "pytorch-lightning>=2.6,<2.7"'
        )


def test_validation_due_after_batch_answers_as_the_loop_then_does():
    record = Record(validation_due_after_batch)
    fit(Tiny(), [record], max_steps=2 * BATCHES, val_check_interval=3, check_val_every_n_epoch=None)
    assert record.answers == [False, False, True, False, False, True, False, False]
    assert record.validated_at == [3, 6]


class Stopped(Exception):
    """Stands in for the SIGTERM stop: the fit ends there, logging nothing more."""


class StopAt(Callback):
    """At the end of batch `batch_idx`: the logged rows before and after write_step_metrics."""

    def __init__(self, batch_idx: int):
        self.batch_idx, self.before, self.after = batch_idx, None, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.batch_idx:
            self.before = list(trainer.logger.rows)
            write_step_metrics(trainer)
            self.after = list(trainer.logger.rows)
            raise Stopped


def test_write_step_metrics_writes_the_steps_row_before_lightning_would():
    plain = [row for row in fit(Tiny(), log_every_n_steps=2).logger.rows if "loss" in row[1]]
    assert [step for step, _ in plain] == [1, 3]
    stop = StopAt(batch_idx=3)
    with pytest.raises(Stopped):
        fit(Tiny(), [stop], log_every_n_steps=2)
    assert stop.before == plain[:1]  # the row of step 3 is not written yet
    assert stop.after == plain  # now it is, as the uninterrupted fit writes it


class SaveAtValidationEnd(Callback):
    """Saves `path` at the end of the validation at `step` (where last.ckpt is saved)."""

    def __init__(self, path, step: int):
        self.path, self.step = path, step

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


class Attached(Tiny):
    """Records is_attached() in on_load_checkpoint."""

    seen: list[bool] = []

    def on_load_checkpoint(self, checkpoint) -> None:
        Attached.seen.append(is_attached(self))


def test_is_attached_tells_a_resumed_fit_from_load_from_checkpoint(tmp_path):
    path = tmp_path / "validated.ckpt"
    fit(Tiny(), [SaveAtValidationEnd(path, step=2)], val_check_interval=2)
    assert not is_attached(Tiny())
    Attached.seen = []
    Attached.load_from_checkpoint(path)
    fit(Attached(), ckpt_path=path)
    assert Attached.seen == [False, True]


class Names(Tiny):
    """Records every value assigned to FX_NAME_ATTRIBUTE (as module.py's __setattr__ sees it)."""

    assigned: list[str | None] = []

    def __setattr__(self, name, value):
        if name == FX_NAME_ATTRIBUTE:
            Names.assigned.append(value)
        super().__setattr__(name, value)


def test_lightning_sets_the_hook_name_attribute_around_each_hook():
    in_step = []
    Names.assigned = []
    fit(Names(lambda module, _: in_step.append(getattr(module, FX_NAME_ATTRIBUTE))))
    assert in_step == ["training_step"] * BATCHES
    assert {"on_train_start", "training_step", "on_train_batch_end"} <= set(Names.assigned)


def test_a_presented_loader_gets_each_epoch_and_passes_the_shuffle_probe():
    # Tiny's loaders are ResidentBatches: without `batch_sampler` the probe of the val loader
    # raises AttributeError; without `sampler`, set_epoch is never called
    record = Record()
    trainer = fit(Tiny(), [record], max_steps=2 * BATCHES)
    assert trainer.train_dataloader.epoch == 1  # set_epoch(1) before the second epoch
    assert record.validated_at == [BATCHES, 2 * BATCHES]
    probe = type("Probe", (), {"set_epoch": lambda self, epoch: None})()
    present_as_dataloader(probe)
    assert probe.sampler is probe and probe.batch_sampler is None


class SleepLauncher(ScriptLauncher):
    def launch(self, function, *args, trainer=None, **kwargs):
        self.check_can_spawn_children()
        self.procs.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]))
        return function(*args, **kwargs)


class SleepStrategy(DDPStrategyWithLauncher):
    def make_launcher(self) -> SleepLauncher:
        return SleepLauncher(self.cluster_environment, self.num_processes, self.num_nodes)


def test_the_strategys_launcher_is_used_and_its_kill_signals_the_started_ranks():
    trainer = pl.Trainer(
        strategy=SleepStrategy(), accelerator="cpu", devices=2, logger=False, max_steps=1
    )
    launcher = trainer.strategy.launcher
    assert isinstance(launcher, SleepLauncher) and launcher.num_processes == 2
    assert not launcher.is_interactive_compatible
    assert launcher.launch(lambda: "ran") == "ran"
    with pytest.raises(RuntimeError, match="only create subprocesses once"):
        launcher.check_can_spawn_children()
    launcher.kill(signal.SIGTERM)
    assert launcher.procs[0].wait(timeout=10) == -signal.SIGTERM


def test_the_wandb_init_arguments_are_what_the_run_starts_with(tmp_path):
    wandb.setup(settings=wandb.Settings(mode="offline"))  # as build_loggers: no telemetry
    logger = WandbLogger(name="compat", save_dir=str(tmp_path), mode="offline", project="p")
    assert "anonymous" in logger._wandb_init  # still passed by Lightning: dropping it still needed
    drop_wandb_init_argument(logger, "anonymous")
    logger._wandb_init["notes"] = "set in the init arguments"
    assert "anonymous" not in logger._wandb_init
    try:
        run = logger.experiment
        assert run.name == "compat" and run.notes == "set in the init arguments"
    finally:
        logger.experiment.finish()
