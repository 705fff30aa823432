"""ClassifierModule: cross-entropy + penalties, metrics, optimizer groups and LR schedule, for
a stack of M member networks (M = 1: a solo run; normlab.stack: several sweep cells at once)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from normlab.data.batches import StepChunk
from normlab.lit.ddp import gather_rank_states, rank_state
from normlab.lit.lightning_compat import FX_NAME_ATTRIBUTE, is_attached
from normlab.lit.regularizers import (
    WeightPenalty,
    apply_decoupled_decay,
    parameter_groups,
    weight_matrices,
)
from normlab.lit.schedules import MemberGroups, MemberSchedules
from normlab.lit.step_plan import account_chunk, restore_validation_trigger
from normlab.stack.batches import member_steps
from normlab.stack.network import MemberStack


@dataclass
class MemberTraining:
    """How one member trains: everything in its config that acts beyond its network."""

    optimizer_factory: Callable
    schedule_factory: Callable | None = None
    schedule_interval: str = "epoch"
    schedule_frequency: int = 1
    label_smoothing: float = 0.0
    penalty: WeightPenalty | None = None
    weight_decay: float = 0.0
    decay_norm_and_bias: bool = False
    augment: nn.Module | None = None
    grad_clip: tuple[float, str] | None = None  # (value, "norm" | "value")

    def __post_init__(self) -> None:
        if self.penalty is not None and not self.penalty.active:
            self.penalty = None


class ClassifierModule(pl.LightningModule):
    """Trains a MemberStack on (x, y) batches; logs train/*, val/*, val/acc_best and test/*
    per member (a stack of one logs them under their plain names).

    Training metrics are accumulated in an on-device buffer and logged every
    `trainer.log_every_n_steps` steps, so no step pays a host sync or a metric object update.

    The step is written out (Lightning's manual optimization) in the order Lightning's automatic
    optimization uses -- forward, zero_grad, backward, `on_before_optimizer_step` hooks
    (instruments, then decoupled decay and clipping here), optimizer step, schedule step -- so
    the numbers are the same, without the closure machinery and its hook calls: on a 3x100 MLP
    Lightning's own per-step work costs more than the math. For the same reason a training
    batch is usually a StepChunk of several batches, one optimizer step each
    (normlab.lit.step_plan says where chunks end and keeps Lightning's counters in steps).

    Members: one optimizer holds every member's parameter groups (with the member's own
    hyperparameters), each member has its own schedule, penalty, label smoothing, clipping and
    augmentation, and the objective is the sum of the members' objectives, so each member's
    gradient is exactly its own. A member whose loss turns non-finite is recorded as diverged
    and no longer logged; the others go on.
    """

    def __init__(
        self,
        model: MemberStack,
        members: Sequence[MemberTraining],
        num_classes: int,
        *,
        config: dict[str, Any] | list[dict[str, Any]] | None = None,
    ):
        super().__init__()
        self.automatic_optimization = False  # see the class docstring
        self.model = model
        self.training_specs = list(members)
        if len(self.training_specs) != len(model):
            raise ValueError(f"{len(model)} networks but {len(self.training_specs)} members")
        self.config = config or {}
        count = len(model)
        self.val_acc = nn.ModuleList(
            MulticlassAccuracy(num_classes, average="micro") for _ in range(count)
        )
        self.test_acc = nn.ModuleList(
            MulticlassAccuracy(num_classes, average="micro") for _ in range(count)
        )
        self.val_loss = nn.ModuleList(MeanMetric() for _ in range(count))
        self.test_loss = nn.ModuleList(MeanMetric() for _ in range(count))
        self.val_acc_best = nn.ModuleList(MaxMetric() for _ in range(count))
        for best in self.val_acc_best:
            best.persistent(True)  # a resumed run remembers its best
        # per member: loss sum, correct count, example count since the last logged step (kept
        # in checkpoints so a resumed run logs the same numbers as an uninterrupted one)
        self.register_buffer("train_sums", torch.zeros(count, 3))
        self.restored_rank_sums: torch.Tensor | None = None  # per-rank sums of a DDP checkpoint
        self.restored_rank_rng = False  # each rank's own random state came from a checkpoint
        # whether validation ran after the last StepChunk (a resumed run must tell Lightning)
        self.validated_last_chunk = False
        self.restored_validated_last: bool | None = None
        self.restored_schedules: dict | None = None
        self.diverged: dict[int, tuple[int, float]] = {}  # member -> (step, loss)
        # early-stopped members: the step they stopped at, and their state then (restored
        # when the fit ends, so the test and the result are the stopped member's)
        self.stopped: dict[int, int] = {}
        self.stopped_states: dict[int, dict[str, torch.Tensor]] = {}
        self.member_groups: list[list[dict]] = []  # each member's optimizer groups
        self.schedules: MemberSchedules | None = None

    @property
    def members(self) -> int:
        """How many networks train here."""
        return len(self.model)

    def member_key(self, member: int, name: str) -> str:
        """The logged name of member `member`'s metric `name` (the plain name when solo);
        normlab.stack.loggers routes the prefixed names to each member's own loggers."""
        return name if self.members == 1 else f"members/{member}/{name}"

    def active(self, member: int) -> bool:
        """Whether member `member` still trains (it has neither diverged nor stopped early)."""
        return member not in self.diverged and member not in self.stopped

    def stop_member(self, member: int) -> None:
        """Early stopping of one member: keep its state of now for the test, log it no more;
        the stack stops when no member trains any more."""
        network = self.model.members[member]
        self.stopped[member] = self.global_step
        self.stopped_states[member] = {
            key: value.detach().clone() for key, value in network.state_dict().items()
        }
        self._stop_when_done()

    def _stop_when_done(self) -> None:
        if not any(self.active(member) for member in range(self.members)):
            self.trainer.should_stop = True

    def on_train_end(self) -> None:
        # a stopped member's weights went on moving with the stack's steps: put back its own
        for member, state in self.stopped_states.items():
            self.model.members[member].load_state_dict(state)

    def best_val_acc(self, member: int = 0) -> float | None:
        """The best validation accuracy so far (restored on resume), None before any validation."""
        value = float(self.val_acc_best[member].max_value)
        return value if math.isfinite(value) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, shared=True)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if isinstance(batch, StepChunk):  # several steps per Lightning batch (lit/step_plan.py)
            steps = member_steps(batch, self.members)
            objective = self._steps(steps, batch.y, batch.first, batch.epoch_steps)
            self.validated_last_chunk = batch.validate_after
            account_chunk(self.trainer, len(batch.sizes), batch.validate_after)
            return objective
        x, y = batch
        steps = [(x.unsqueeze(0), y.unsqueeze(0))] if self.members == 1 else [(x, y)]
        return self._steps(steps, y, batch_idx, self.trainer.num_training_batches)

    def _steps(self, batches, labels, first: int, epoch_steps: int) -> torch.Tensor:
        """One optimizer step per (x, y) of `batches` (steps `first` + 1, ... of the epoch's
        `epoch_steps`; x, y carry the member axis; `labels`: all their y), then the training
        window's bookkeeping.

        Per step, the only bookkeeping op is one add to the window's loss sums, in step order,
        so the sums (and what is logged) do not depend on how steps are grouped; hits and
        example counts are integers, summed once per call. A logged window always ends on the
        last of these steps (the step plan ends chunks there).
        """
        log_every = self.trainer.log_every_n_steps
        loss_sum = self.train_sums[:, 0].clone()
        logits_seen, window_end, size = [], None, 0
        for offset, (x, y) in enumerate(batches):
            step = self.global_step
            if (step + 1) % log_every == 0:  # the learning rates this step trains with
                window_end = (step, [groups[0]["lr"] for groups in self.member_groups])
            objective, losses, logits = self._optimizer_step(x, y, first + offset + 1, epoch_steps)
            loss_sum.add_(losses, alpha=y.shape[1])
            logits_seen.append(logits)
            size += y.shape[1]
        labels = labels.reshape(self.members, -1) if labels.dim() == 1 else labels
        with torch.no_grad():
            hits = (torch.cat(logits_seen, dim=1).argmax(dim=2) == labels).sum(dim=1)
            _, correct, count = self.train_sums.unbind(1)
            self.train_sums.copy_(torch.stack((loss_sum, correct + hits, count + size), dim=1))
        if window_end is not None:
            self._log_train_window(*window_end)
        return objective

    def _optimizer_step(
        self, x, y, epoch_step: int, epoch_steps: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer step of every member on its batch (x[m], y[m]), step `epoch_step`
        (1-based) of `epoch_steps`; the summed objective, the members' cross-entropies and
        logits (detached)."""
        specs = self.training_specs
        if any(spec.augment is not None for spec in specs):
            x = self._augment(x)
        logits = self.model(x)
        losses, objectives = [], []
        world = self.trainer.world_size
        for member, spec in enumerate(specs):
            loss = F.cross_entropy(logits[member], y[member], label_smoothing=spec.label_smoothing)
            losses.append(loss)
            if spec.penalty is not None:
                weights = weight_matrices(self.model.members[member])
                loss = loss + spec.penalty(weights, y.shape[1] * world)
            objectives.append(loss)
        objective = objectives[0] if len(objectives) == 1 else torch.stack(objectives).sum()
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(objective)
        optimizer.step()  # calls on_before_optimizer_step, counts the global step
        self._step_schedules("step", epoch_step)
        if epoch_step == epoch_steps:
            self._step_schedules("epoch", self.current_epoch + 1)
        return objective.detach(), torch.stack(losses).detach(), logits.detach()

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's augmentation of its own batch, from its own random stream."""
        parts = []
        for member, spec in enumerate(self.training_specs):
            part = x[member]
            if spec.augment is not None:
                with self.model.randomness.member(member, x.device):
                    part = spec.augment(part)
            parts.append(part)
        return torch.stack(parts)

    def _step_schedules(self, interval: str, count: int) -> None:
        """Lightning's rule for its automatic optimization: step when `count % frequency == 0`
        (count: the batch within the epoch for `step`, the epoch for `epoch`), per member."""
        if self.schedules is None:
            return
        for member, spec in enumerate(self.training_specs):
            if spec.schedule_interval == interval and not count % spec.schedule_frequency:
                self.schedules.step(member)

    def _log_train_window(self, step: int, lrs: list[float]) -> None:
        """Log the window that ends with `step` (trained at learning rates `lrs`), start anew."""
        # summed over DDP ranks (a no-op on one device): the logged loss is the global batch's
        sums = self.trainer.strategy.reduce(self.train_sums, reduce_op="sum")
        # checked only at logging steps: a per-step check would force a host sync on GPU
        finite = torch.isfinite(sums[:, 0]).tolist()
        metrics = {}
        for member, (loss_sum, correct, count) in enumerate(sums):
            if not self.active(member):
                continue
            if not finite[member]:
                loss = float(loss_sum / count)
                if self.members == 1:
                    raise Diverged(step, loss)
                self.diverged[member] = (step, loss)
                continue
            key = partial_key(self, member)
            metrics[key("train/loss")] = loss_sum / count
            metrics[key("train/acc")] = correct / count
            metrics[key("train/lr")] = float(lrs[member])
        self._stop_when_done()
        if metrics:
            self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=1)
        self.train_sums.zero_()

    def _evaluate(self, batch, losses: nn.ModuleList, accuracies: nn.ModuleList) -> None:
        x, y = batch
        logits = self.model(x, shared=True)
        testing = self.trainer.testing
        for member in range(self.members):
            # a diverged member's outputs are NaN; an early-stopped one is still tested
            if member in self.diverged or not (testing or self.active(member)):
                continue
            losses[member].update(F.cross_entropy(logits[member], y), weight=len(y))
            accuracies[member].update(logits[member], y)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_loss, self.val_acc)

    def on_validation_epoch_end(self) -> None:
        metrics = {}
        for member in range(self.members):
            if self.active(member):
                acc = self.val_acc[member].compute()
                self.val_acc_best[member].update(acc)
                key = partial_key(self, member)
                metrics[key("val/loss")] = self.val_loss[member].compute()
                metrics[key("val/acc")] = acc
                metrics[key("val/acc_best")] = self.val_acc_best[member].compute()
            self.val_loss[member].reset()
            self.val_acc[member].reset()
        self.log_dict(metrics)

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_loss, self.test_acc)

    def on_test_epoch_end(self) -> None:
        metrics = {}
        for member in range(self.members):
            key = partial_key(self, member)
            if member not in self.diverged:
                metrics[key("test/loss")] = self.test_loss[member].compute()
                metrics[key("test/acc")] = self.test_acc[member].compute()
            self.test_loss[member].reset()
            self.test_acc[member].reset()
        self.log_dict(metrics)

    def configure_optimizers(self):
        """One optimizer over every member's groups, each group with its member's settings; the
        members' schedules act on their own groups only (normlab.lit.schedules)."""
        member_optimizers = [
            spec.optimizer_factory(
                parameter_groups(network, spec.weight_decay, spec.decay_norm_and_bias)
            )
            for network, spec in zip(self.model.members, self.training_specs, strict=True)
        ]
        first = member_optimizers[0]
        if len(member_optimizers) == 1:
            optimizer = first
        else:
            if len({type(o) for o in member_optimizers}) > 1:
                raise ValueError("members of one stack share their optimizer class")
            groups = [group for member in member_optimizers for group in member.param_groups]
            for group in groups:
                if "foreach" in group and group["foreach"] is None:
                    # one C++ loop over the stack's many tensors, not one Python call each
                    group["foreach"] = True
            optimizer = type(first)(groups, **first.defaults)
        self.member_groups, start = [], 0
        for member in member_optimizers:
            count = len(member.param_groups)
            self.member_groups.append(optimizer.param_groups[start : start + count])
            start += count
        factories = [spec.schedule_factory for spec in self.training_specs]
        if all(factory is None for factory in factories):
            return optimizer
        self.schedules = MemberSchedules(
            optimizer,
            [
                factory(MemberGroups(groups, optimizer)) if factory is not None else None
                for factory, groups in zip(factories, self.member_groups, strict=True)
            ],
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.schedules}}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if any(spec.weight_decay for spec in self.training_specs):
            apply_decoupled_decay(optimizer)
        # after the callbacks' hooks: instruments see raw gradients; each member clipped alone
        for spec, groups in zip(self.training_specs, self.member_groups, strict=True):
            if spec.grad_clip is not None:
                value, algorithm = spec.grad_clip
                parameters = [p for group in groups for p in group["params"]]
                if algorithm == "norm":
                    torch.nn.utils.clip_grad_norm_(parameters, value)
                else:
                    torch.nn.utils.clip_grad_value_(parameters, value)

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets `_current_fx_name` around every hook call, some 40 times a step, and
        # nn.Module.__setattr__ (parameter, buffer and submodule checks) made that ~10% of a
        # small model's step. A plain attribute: the plain setter is equivalent.
        if name == FX_NAME_ATTRIBUTE:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["normlab_config"] = self.config  # a checkpoint names the config that made it
        # every random stream a member draws from (dropout / dropconnect / augmentation)
        checkpoint["normlab_rng"] = self.model.randomness.state_dict()
        checkpoint["normlab_validated_last"] = self.validated_last_chunk
        checkpoint["normlab_diverged"] = dict(self.diverged)
        checkpoint["normlab_stopped"] = {"steps": self.stopped, "states": self.stopped_states}
        if self.trainer.world_size > 1:
            # every rank saves (rank 0 writes): keep each rank's window sums, or the resumed
            # run's first logged train/loss and train/acc would differ from an uninterrupted one
            checkpoint["normlab_rank_train_sums"] = self.all_gather(self.train_sums).cpu()
            # and each rank's random streams, CPU and CUDA (dropout masks differ across ranks)
            checkpoint["normlab_rank_rng"] = gather_rank_states(
                self.model.randomness.state_dict(), self.all_gather
            )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "normlab_rng" in checkpoint:
            self.model.randomness.load_state_dict(checkpoint["normlab_rng"])
        self.diverged = dict(checkpoint.get("normlab_diverged", {}))
        stopped = checkpoint.get("normlab_stopped", {"steps": {}, "states": {}})
        self.stopped, self.stopped_states = dict(stopped["steps"]), dict(stopped["states"])
        self.restored_rank_sums = checkpoint.get("normlab_rank_train_sums")
        self.restored_validated_last = checkpoint.get("normlab_validated_last")
        rank_rng = checkpoint.get("normlab_rank_rng")
        attached = is_attached(self)  # not so in `load_from_checkpoint`
        self.restored_rank_rng = (
            rank_rng is not None and attached and len(rank_rng) == self.trainer.world_size
        )
        if self.restored_rank_rng:  # this rank's own streams, not rank 0's
            self.model.randomness.load_state_dict(rank_state(rank_rng, self.global_rank))

    def on_train_start(self) -> None:
        # after the state dict (rank 0's sums) is loaded into every rank
        sums = self.restored_rank_sums
        if sums is not None and len(sums) == self.trainer.world_size:
            self.train_sums.copy_(sums[self.global_rank])
        self.restored_rank_sums = None
        if self.restored_validated_last is not None:
            restore_validation_trigger(self.trainer, self.restored_validated_last)
            self.restored_validated_last = None


def partial_key(module: ClassifierModule, member: int) -> Callable[[str], str]:
    """`name -> module.member_key(member, name)`."""
    return lambda name: module.member_key(member, name)


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"training loss {loss} at step {step}")
        self.step, self.loss = step, loss
