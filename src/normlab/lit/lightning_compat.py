"""Every use of Lightning's (and W&B's) private API, checked against the version it was verified
on.

normlab leans on a few Lightning internals where no public API does the job (a SIGTERM stop at a
resumable point, DDP ranks that join one run folder). Each lives here as a small named function
whose comment cites what it relies on in pytorch_lightning 2.6.6; tests/test_lightning_compat.py
pins each one on a real Trainer, so a Lightning release that moves one fails there by name
rather than somewhere in a training run.
"""

from __future__ import annotations

import re
from abc import abstractmethod

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

SUPPORTED_LIGHTNING = ">=2.6,<2.7"


class UnsupportedLightning(ImportError):
    """The installed pytorch-lightning is outside the range this module was verified on."""


def check_lightning_version(version: str) -> None:
    """Raise UnsupportedLightning unless `version` is a 2.6.x release."""
    found = re.match(r"(\d+)\.(\d+)", version)
    if found is None or (int(found[1]), int(found[2])) != (2, 6):
        raise UnsupportedLightning(
            f"normlab supports pytorch-lightning {SUPPORTED_LIGHTNING} (found {version}); "
            f'pip install "pytorch-lightning{SUPPORTED_LIGHTNING}"'
        )


check_lightning_version(pl.__version__)


# --- stopping between steps (normlab.callbacks.preemption) ---


def validation_due_after_batch(trainer: pl.Trainer) -> bool:
    """At on_train_batch_end: whether Lightning validates once this batch is done."""
    # TrainingEpochLoop.on_advance_end asks `_should_check_val_fx(data_fetcher)` with the fit
    # loop's fetcher right after the batch-end hooks; nothing it reads (batch_progress.ready,
    # is_last_batch, val_check_batch, should_stop) changes in between
    # (loops/training_epoch_loop.py).
    fit_loop = trainer.fit_loop
    return fit_loop.epoch_loop._should_check_val_fx(fit_loop._data_fetcher)


def write_step_metrics(trainer: pl.Trainer) -> None:
    """At on_train_batch_end: hand what the step logged to the loggers now, not after the hooks."""
    # TrainingEpochLoop.advance calls LoggerConnector.update_train_step_metrics after the
    # on_train_batch_end hooks (loops/training_epoch_loop.py); it logs when the step is on the
    # log_every_n_steps cadence, at `_batches_that_stepped` (logger_connector.py).
    trainer._logger_connector.update_train_step_metrics()


# --- DDP ranks (normlab.lit.ddp) ---


class ScriptLauncher(_SubprocessScriptLauncher):
    """Lightning's `ddp` launcher, as the base of one whose `launch` starts the local ranks itself.

    It keeps the started ranks in `procs`, and its `kill` signals them: Lightning calls it on a
    signal (trainer/connectors/signal_connector.py) and, for launchers of this class only, on
    Ctrl+C (trainer/call.py `_call_and_handle_interrupt`).
    """

    # strategies/launchers/subprocess_script.py: __init__(cluster_environment, num_processes,
    # num_nodes) sets those attributes and `procs = []`; is_interactive_compatible is False

    def check_can_spawn_children(self) -> None:
        """Refuse to start ranks twice, or from a process that is not local rank 0."""
        self._check_can_spawn_children()


class DDPStrategyWithLauncher(DDPStrategy):
    """DDPStrategy whose launcher is `make_launcher()`."""

    # The accelerator connector calls the strategy's private `_configure_launcher` hook once the
    # cluster environment and process counts are set (trainer/connectors/accelerator_connector.py
    # `_lazy_init_strategy`); the Trainer then uses `strategy.launcher`, which reads `_launcher`
    # (strategies/strategy.py, trainer/call.py).

    @abstractmethod
    def make_launcher(self) -> ScriptLauncher:
        """The launcher that starts this strategy's processes."""

    def _configure_launcher(self) -> None:
        self._launcher = self.make_launcher()


# --- W&B (normlab.utils.loggers) ---


def drop_wandb_init_argument(logger: WandbLogger, name: str) -> None:
    """Leave `name` out of the arguments the logger passes to `wandb.init` when its run starts."""
    # WandbLogger.__init__ collects wandb.init's keyword arguments in `_wandb_init` and its
    # `experiment` property calls `wandb.init(**self._wandb_init)` on first use (loggers/wandb.py)
    logger._wandb_init.pop(name, None)


# --- loaders that are not DataLoaders (normlab.data.batches) ---


def present_as_dataloader(loader) -> None:
    """Let Lightning drive `loader` (an iterable with `set_epoch`) like a DataLoader whose
    sampler is `loader` itself: it then calls `loader.set_epoch(epoch)` before each epoch."""
    # lightning_fabric/utilities/data.py `_set_sampler_epoch`, called at every epoch start and on
    # resume (loops/fit_loop.py on_advance_start, loops/evaluation_loop.py), calls
    # `loader.sampler.set_epoch`. utilities/data.py `_is_dataloader_shuffled`, asked about every
    # val/test loader (trainer/connectors/data_connector.py `_process_dataloader`), reads
    # `loader.batch_sampler` whenever `loader.sampler` exists; None sends it to the sampler,
    # which is no RandomSampler: not shuffled, no warning.
    loader.sampler = loader
    loader.batch_sampler = None


# --- the LightningModule (normlab.lit.module) ---

# trainer/call.py sets this attribute of the LightningModule to the hook's name around every hook
# it calls (`_call_lightning_module_hook`, `_call_callback_hooks`, ...); LightningModule.log reads
# it to tell which hook logs (core/module.py)
FX_NAME_ATTRIBUTE = "_current_fx_name"


def is_attached(module: pl.LightningModule) -> bool:
    """Whether `module` is attached to a Trainer (it is not in `load_from_checkpoint`)."""
    # core/module.py: the `trainer` property raises when `_trainer` is None; its setter writes it
    return module._trainer is not None
