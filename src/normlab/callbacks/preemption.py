"""Save a checkpoint when the job is told to stop: SIGTERM (SLURM preemption, `kill`), SIGUSR1
(Lightning's usual `--signal=USR1@90` before a time limit) or SIGUSR2 (submitit's timeout and
preemption signal). Whichever arrives, the handler only sets a flag; the stop, the checkpoint
and (under SLURM) the requeue happen later, outside any signal handler (normlab.utils.slurm).

Lightning's own SIGTERM handling raises wherever the signal lands (mid-validation, at an epoch's
end, after the step counters moved on) and a checkpoint saved from there resumes into a
different run. So normlab takes the signals itself and stops only at the two points Lightning's
resume logic is built for, which are also where `ModelCheckpoint` saves:

- the end of a training step with no validation due (a step-end checkpoint; what the step
  logged is written first, as Lightning would have right after), or
- the end of the validation that the step runs (the `last.ckpt` point),

never on an epoch's last step (it waits one step more) and never on the fit's last step (the
run simply finishes).

A re-run then ends with exactly the metrics of an uninterrupted run.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from normlab.lit.lightning_compat import validation_due_after_batch, write_step_metrics

log = logging.getLogger(__name__)


# the signals that stop a run at its next resume-safe point
# (SIGINT, Ctrl+C, too: the run stops at a resume-safe step instead of wherever it is)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


class Preempted(SIGTERMException):
    """The fit stopped at a resume-safe point on a stop signal; its checkpoint is saved."""

    def __init__(self, signal_name: str):
        super().__init__(143)  # a SystemExit: the exit code of a terminated process
        self.signal_name = signal_name


class CheckpointOnPreemption(Callback):
    """On a stop signal: finish the step (and its validation, if due), save `path`, stop the fit."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.received: int | None = None  # the first stop signal that arrived (this rank)
        self.stop_after_validation = False

    @property
    def requested(self) -> bool:
        """Whether a stop signal arrived in this process."""
        return self.received is not None

    def _request(self, signum, frame) -> None:  # signal handler: only set a flag
        if self.received is None:
            self.received = signum

    def _take_signals(self) -> None:
        # Lightning registers its SIGTERM handler just before the sanity check and training
        # start (it restores the previous handlers, submitit's under SLURM, at teardown), so
        # ours replaces it from here on; USR1 / USR2 would otherwise end the process at once
        # (the default action) or run submitit's requeue inside a signal handler mid-step
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) != self._request:
                signal.signal(signum, self._request)

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._take_signals()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._take_signals()

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # training is over and the test takes seconds: finishing beats a resume that redoes it
        self._take_signals()

    def _agreed(self, trainer: pl.Trainer) -> bool:
        # every rank must stop at the same step (the checkpoint save is collective)
        if trainer.world_size > 1:
            return trainer.strategy.reduce_boolean_decision(self.requested, all=False)
        return self.requested

    def _stop(self, trainer: pl.Trainer) -> None:
        # another rank may have been signalled: this one then names the agreement
        name = signal.Signals(self.received).name if self.received else "a stop signal (a rank)"
        trainer.save_checkpoint(self.path)
        log.warning("%s: checkpoint saved at step %d", name, trainer.global_step)
        raise Preempted(name)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._agreed(trainer) or _last_step(trainer):
            return  # on the last step, finishing (validation, test) is the quickest way out
        if trainer.is_last_batch:
            return  # the epoch's end is no resume point: stop one step into the next epoch
        if trainer.enable_validation and validation_due_after_batch(trainer):
            # a checkpoint from here would make the resumed run skip this step's validation
            self.stop_after_validation = True
            return
        # what this step logged reaches the loggers only after the batch-end hooks, and the
        # checkpoint counts it as logged: write it now, or its row would be lost
        write_step_metrics(trainer)
        self._stop(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        if _last_step(trainer) or trainer.is_last_batch:
            return
        if self.stop_after_validation or self._agreed(trainer):
            self._stop(trainer)


def _last_step(trainer: pl.Trainer) -> bool:
    """Whether the step just taken is the fit's last (by max_steps or max_epochs)."""
    if 0 <= trainer.max_steps <= trainer.global_step:
        return True
    max_epochs = trainer.max_epochs
    final_epoch = max_epochs not in (None, -1) and trainer.current_epoch + 1 >= max_epochs
    return final_epoch and trainer.is_last_batch
