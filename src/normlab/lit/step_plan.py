"""Several optimizer steps per Lightning batch, with every cadence still counted in steps.

On a small model Lightning's work around each batch (fetch, hooks, progress counters, logger
connector: ~0.4 ms on this 2-core VM) costs more than a 3x100 MLP's step (~0.65 ms). So the
training data comes in StepChunks of up to `steps_per_call` batches and `training_step` takes
them one optimizer step at a time. Nothing else changes, because a chunk ends wherever
something happens between steps:

- validation (trainer.val_check_interval, counted like Lightning: across epochs, or within
  the epoch when trainer.check_val_every_n_epoch is set),
- a logged training window (trainer.log_every_n_steps),
- an instruments recording (callbacks.instruments.every_n_steps: a chunk of that one step),
- the epoch's end and trainer.max_steps.

Lightning still counts batches in two places, which `account_chunk` moves to steps after each
chunk (through normlab.lit.lightning_compat): the logger's step and the validation trigger. The
global step, the learning-rate schedule and every `on_before_optimizer_step` hook already count
optimizer steps. metrics.csv and the trained weights are bit-identical to `steps_per_call=1`
(tests/test_step_plan.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl

from normlab.lit.lightning_compat import add_logger_steps, set_validation_check


@dataclass(frozen=True)
class StepPlan:
    """The cadences a chunk of steps must not cross (normlab.data.batches.ChunkPlan)."""

    steps_per_call: int
    val_every: int  # trainer.val_check_interval, in steps
    val_within_epoch: bool  # trainer.check_val_every_n_epoch is set: count within the epoch
    log_every: int  # trainer.log_every_n_steps
    record_every: int | None = None  # callbacks.instruments.every_n_steps
    max_steps: int | None = None

    @classmethod
    def from_config(cls, cfg) -> StepPlan:
        instruments = cfg.callbacks.instruments
        return cls(
            steps_per_call=cfg.steps_per_call,
            val_every=cfg.trainer.val_check_interval,
            val_within_epoch=cfg.trainer.check_val_every_n_epoch is not None,
            log_every=cfg.trainer.log_every_n_steps,
            record_every=instruments.every_n_steps if instruments is not None else None,
            max_steps=cfg.trainer.max_steps if cfg.trainer.max_steps >= 0 else None,
        )

    def validation_due(self, steps_done: int, epoch_steps_done: int) -> bool:
        """Lightning's rule (`(batch + 1) % val_check_batch == 0`) with steps for batches."""
        counted = epoch_steps_done if self.val_within_epoch else steps_done
        return counted % self.val_every == 0

    def ends_chunk(self, steps_done: int, epoch_steps_done: int) -> bool:
        """Whether something happens once `steps_done` steps are taken (see the module doc)."""
        if steps_done == self.max_steps or steps_done % self.log_every == 0:
            return True
        # a recording reads the weights before its step and after it: a chunk of its own
        if self.record_every is not None and steps_done % self.record_every in (0, 1):
            return True
        return self.validation_due(steps_done, epoch_steps_done)


def account_chunk(trainer: pl.Trainer, steps: int, validate_after: bool) -> None:
    """After a chunk of `steps` steps: Lightning's batch counters, moved to count steps.

    The logger connector logs at (and checks its cadence with) a count that Lightning adds 1 to
    per batch: the other `steps - 1` are added here, before it logs. The validation check after
    the batch is set to fire exactly when the chunk ended on a validation step.
    """
    add_logger_steps(trainer, steps - 1)
    set_validation_check(trainer, validate_after)


def restore_validation_trigger(trainer: pl.Trainer, validated_last: bool) -> None:
    """On resume, before the first batch: Lightning asks its validation check whether the last
    batch before the checkpoint ran validation (to skip redoing it); answer as that run did."""
    set_validation_check(trainer, validated_last, resuming=True)
