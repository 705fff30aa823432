"""ClassifierModule: cross-entropy + penalties, metrics, optimizer groups and LR schedule."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from normlab.data.batches import StepChunk
from normlab.lit.regularizers import (
    WeightPenalty,
    apply_decoupled_decay,
    parameter_groups,
    weight_matrices,
)
from normlab.lit.step_plan import account_chunk, restore_validation_trigger


class ClassifierModule(pl.LightningModule):
    """Trains `model` on (x, y) batches; logs train/*, val/*, val/acc_best and test/*.

    Training metrics are accumulated in an on-device buffer and logged every
    `trainer.log_every_n_steps` steps, so no step pays a host sync or a metric object update.

    The step is written out (Lightning's manual optimization) in the order Lightning's automatic
    optimization uses -- forward, zero_grad, backward, `on_before_optimizer_step` hooks
    (instruments, then decoupled decay and clipping here), optimizer step, schedule step -- so
    the numbers are the same, without the closure machinery and its hook calls: on a 3x100 MLP
    Lightning's own per-step work costs more than the math. For the same reason a training
    batch is usually a StepChunk of several batches, one optimizer step each
    (normlab.lit.step_plan says where chunks end and keeps Lightning's counters in steps).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer_factory: Callable,
        num_classes: int,
        *,
        schedule_factory: Callable | None = None,
        schedule_interval: str = "epoch",
        schedule_frequency: int = 1,
        label_smoothing: float = 0.0,
        penalty: WeightPenalty | None = None,
        weight_decay: float = 0.0,
        decay_norm_and_bias: bool = False,
        augment: nn.Module | None = None,
        grad_clip: tuple[float, str] | None = None,
        config: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.automatic_optimization = False  # see the class docstring
        self.grad_clip = grad_clip  # (value, "norm" | "value")
        self.model = model
        self.optimizer_factory, self.schedule_factory = optimizer_factory, schedule_factory
        self.schedule_interval, self.schedule_frequency = schedule_interval, schedule_frequency
        self.label_smoothing = label_smoothing
        self.penalty = penalty if penalty is not None and penalty.active else None
        self.weight_decay, self.decay_norm_and_bias = weight_decay, decay_norm_and_bias
        self.augment = augment
        self.config = config or {}
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # a resumed run remembers its best
        # loss sum, correct count, example count since the last logged step (kept in
        # checkpoints so a resumed run logs the same numbers as an uninterrupted one)
        self.register_buffer("train_sums", torch.zeros(3))
        self.restored_rank_sums: torch.Tensor | None = None  # per-rank sums of a DDP checkpoint
        self.restored_rank_rng = False  # each rank's own random state came from a checkpoint
        # whether validation ran after the last StepChunk (a resumed run must tell Lightning)
        self.validated_last_chunk = False
        self.restored_validated_last: bool | None = None

    def best_val_acc(self) -> float | None:
        """The best validation accuracy so far (restored on resume), None before any validation."""
        value = float(self.val_acc_best.max_value)
        return value if math.isfinite(value) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if isinstance(batch, StepChunk):  # several steps per Lightning batch (lit/step_plan.py)
            objective = self._steps(batch.batches(), batch.y, batch.first, batch.epoch_steps)
            self.validated_last_chunk = batch.validate_after
            account_chunk(self.trainer, len(batch.sizes), batch.validate_after)
            return objective
        x, y = batch
        return self._steps([(x, y)], y, batch_idx, self.trainer.num_training_batches)

    def _steps(self, batches, labels, first: int, epoch_steps: int) -> torch.Tensor:
        """One optimizer step per (x, y) of `batches` (steps `first` + 1, ... of the epoch's
        `epoch_steps`; `labels`: all their y), then the training window's bookkeeping.

        Per step, the only bookkeeping op is one add to the window's loss sum, in step order,
        so the sums (and what is logged) do not depend on how steps are grouped; hits and
        example counts are integers, summed once per call. A logged window always ends on the
        last of these steps (the step plan ends chunks there).
        """
        optimizer = self.optimizers()
        log_every = self.trainer.log_every_n_steps
        loss_sum = self.train_sums[0].clone()
        logits_seen, window_end = [], None
        for offset, (x, y) in enumerate(batches):
            step = self.global_step
            if (step + 1) % log_every == 0:  # the learning rate this step trains with
                window_end = (step, optimizer.param_groups[0]["lr"])
            objective, loss, logits = self._optimizer_step(
                optimizer, x, y, first + offset + 1, epoch_steps
            )
            loss_sum.add_(loss, alpha=len(y))
            logits_seen.append(logits)
        with torch.no_grad():
            hits = (torch.cat(logits_seen).argmax(dim=1) == labels).sum()
            _, correct, count = self.train_sums
            self.train_sums.copy_(torch.stack((loss_sum, correct + hits, count + len(labels))))
        if window_end is not None:
            self._log_train_window(*window_end)
        return objective

    def _optimizer_step(
        self, optimizer, x, y, epoch_step: int, epoch_steps: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer step on batch (x, y), step `epoch_step` (1-based) of `epoch_steps`;
        its objective, cross-entropy and logits (detached)."""
        if self.augment is not None:
            x = self.augment(x)
        logits = self.model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        objective = (
            loss
            if self.penalty is None
            else loss + self.penalty(weight_matrices(self.model), len(y) * self.trainer.world_size)
        )
        optimizer.zero_grad()
        self.manual_backward(objective)
        optimizer.step()  # calls on_before_optimizer_step, counts the global step
        self._step_schedule("step", epoch_step)
        if epoch_step == epoch_steps:
            self._step_schedule("epoch", self.current_epoch + 1)
        return objective.detach(), loss.detach(), logits.detach()

    def _step_schedule(self, interval: str, count: int) -> None:
        """Lightning's rule for its automatic optimization: step when `count % frequency == 0`
        (count: the batch within the epoch for `step`, the epoch for `epoch`)."""
        if self.schedule_interval != interval or count % self.schedule_frequency:
            return  # checked first: this runs twice a step
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    def _log_train_window(self, step: int, lr: float) -> None:
        """Log the window that ends with `step` (trained at learning rate `lr`) and start anew."""
        # summed over DDP ranks (a no-op on one device): the logged loss is the global batch's
        loss_sum, correct, count = self.trainer.strategy.reduce(self.train_sums, reduce_op="sum")
        # checked only at logging steps: a per-step check would force a host sync on GPU
        if not torch.isfinite(loss_sum):
            raise Diverged(step, float(loss_sum / count))
        self.log_dict(
            {"train/loss": loss_sum / count, "train/acc": correct / count, "train/lr": float(lr)},
            on_step=True,
            on_epoch=False,
            batch_size=1,
        )
        self.train_sums.zero_()

    def _evaluate(self, batch, loss_metric: MeanMetric, acc_metric: MulticlassAccuracy) -> None:
        x, y = batch
        logits = self.model(x)
        loss_metric.update(F.cross_entropy(logits, y), weight=len(y))
        acc_metric.update(logits, y)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_loss, self.val_acc)

    def on_validation_epoch_end(self) -> None:
        acc = self.val_acc.compute()
        self.val_acc_best.update(acc)
        self.log_dict(
            {
                "val/loss": self.val_loss.compute(),
                "val/acc": acc,
                "val/acc_best": self.val_acc_best.compute(),
            }
        )
        self.val_loss.reset()
        self.val_acc.reset()

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_loss, self.test_acc)

    def on_test_epoch_end(self) -> None:
        self.log_dict({"test/loss": self.test_loss.compute(), "test/acc": self.test_acc.compute()})
        self.test_loss.reset()
        self.test_acc.reset()

    def configure_optimizers(self):
        groups = parameter_groups(self.model, self.weight_decay, self.decay_norm_and_bias)
        optimizer = self.optimizer_factory(groups)
        if self.schedule_factory is None:
            return optimizer
        scheduler = {
            "scheduler": self.schedule_factory(optimizer),
            "interval": self.schedule_interval,
            "frequency": self.schedule_frequency,
        }
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.weight_decay:
            apply_decoupled_decay(optimizer)
        if self.grad_clip is not None:  # after the callbacks' hooks: instruments see raw grads
            value, algorithm = self.grad_clip
            self.clip_gradients(optimizer, value, algorithm)

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets `_current_fx_name` around every hook call, some 40 times a step, and
        # nn.Module.__setattr__ (parameter, buffer and submodule checks) made that ~10% of a
        # small model's step. A plain attribute: the plain setter is equivalent.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["normlab_config"] = self.config  # a checkpoint names the config that made it
        checkpoint["normlab_rng"] = torch.get_rng_state()  # dropout / augmentation draws
        checkpoint["normlab_validated_last"] = self.validated_last_chunk
        if self.trainer.world_size > 1:
            # every rank saves (rank 0 writes): keep each rank's window sums, or the resumed
            # run's first logged train/loss and train/acc would differ from an uninterrupted one
            checkpoint["normlab_rank_train_sums"] = self.all_gather(self.train_sums).cpu()
            # and each rank's random stream (dropout masks differ across ranks)
            checkpoint["normlab_rank_rng"] = self.all_gather(torch.get_rng_state()).cpu()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "normlab_rng" in checkpoint:
            torch.set_rng_state(checkpoint["normlab_rng"])
        self.restored_rank_sums = checkpoint.get("normlab_rank_train_sums")
        self.restored_validated_last = checkpoint.get("normlab_validated_last")
        rank_rng = checkpoint.get("normlab_rank_rng")
        attached = self._trainer is not None  # not so in `load_from_checkpoint`
        self.restored_rank_rng = (
            rank_rng is not None and attached and len(rank_rng) == self.trainer.world_size
        )
        if self.restored_rank_rng:
            # a copy: set_rng_state on a row view (storage offset) crashes the process
            torch.set_rng_state(rank_rng[self.global_rank].clone())

    def on_train_start(self) -> None:
        # after the state dict (rank 0's sums) is loaded into every rank
        sums = self.restored_rank_sums
        if sums is not None and len(sums) == self.trainer.world_size:
            self.train_sums.copy_(sums[self.global_rank])
        self.restored_rank_sums = None
        if self.restored_validated_last is not None:
            restore_validation_trigger(self.trainer, self.restored_validated_last)
            self.restored_validated_last = None


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"training loss {loss} at step {step}")
        self.step, self.loss = step, loss
