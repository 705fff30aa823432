"""ClassifierModule: M members trained as one (M = 1: a solo run), every step a fixed number of
tensor ops over the member axis.

Per step: each member's batch through MemberNetworks (one batched forward), each member's
cross-entropy plus its regularizers' loss terms (`[M]`: label smoothing, L2 / L1 penalties), one
backward of their sum (each member's gradient is exactly its own), one MemberOptimizer step
(masking, decoupled decay, clipping, the update, all member-wise), the member-wise schedules,
and the training sums. Regularizers act where their `acts_on` says (normlab.lit.regularizers),
one call each over the member axis.
Member-wise settings are `[M]` tensors; there is no Python loop over members in the step but for
random draws (one small op per member and draw: each member's masks come from its own stream).

A member stops training when its loss turns non-finite (checked where a training window is
logged, so no step waits on the host) or when its early-stopping rule says so: it is masked,
takes no more steps, logs no more; the run stops when no member trains.

Metrics are `[M]` tensors under one set of names (`train/loss`, `val/acc`, ...), handed to the
run's MemberLoggers, which writes member m's entry into member m's own metrics.csv and W&B run.
The latest per-member values are in `latest` (the member-axis counterpart of
`trainer.callback_metrics`, which holds scalars only).

Lightning's contract holds: one optimizer step per training batch (manual optimization, in the
order of Lightning's automatic optimization: forward, zero_grad, backward, the
`on_before_optimizer_step` hooks, optimizer step, schedule step), so every batch hook,
LearningRateMonitor and the progress bar see every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from normlab.lit.ddp import gather_rank_states, rank_state
from normlab.lit.lightning_compat import FX_NAME_ATTRIBUTE, is_attached
from normlab.lit.losses import member_cross_entropy
from normlab.lit.member_schedules import MemberSchedule, MemberSchedules
from normlab.lit.optimizers import MemberOptimizer, member_optimizer
from normlab.lit.regularizers import PLACES, Regularizer, weight_matrix_names
from normlab.models.members import MemberNetworks


@dataclass
class MemberTraining:
    """How one member trains: everything in its config that acts beyond its network."""

    optimizer_factory: Callable
    schedule: MemberSchedule | None = None
    # the regularizers it uses by name: (Regularizer class, its settings)
    regularizers: dict[str, tuple[type[Regularizer], Any]] = field(default_factory=dict)


def member_regularizers(
    specs: Sequence[MemberTraining], model: MemberNetworks
) -> dict[str, Regularizer]:
    """One Regularizer per name any member uses, over every member's settings (None for a
    member without it)."""
    kinds: dict[str, type[Regularizer]] = {}
    for spec in specs:
        for name, (kind, _) in spec.regularizers.items():
            if kinds.setdefault(name, kind) is not kind:
                raise ValueError(f"regularizer {name} names two classes in one stack")
    return {
        name: kind(
            [spec.regularizers[name][1] if name in spec.regularizers else None for spec in specs],
            model,
        )
        for name, kind in kinds.items()
    }


class ClassifierModule(pl.LightningModule):
    """Trains MemberNetworks on member batches (`x` `[M, B, ...]`, `y` `[M, B]`); logs
    train/*, val/*, val/acc_best and test/* per member (see the module docstring)."""

    def __init__(
        self,
        model: MemberNetworks,
        members: Sequence[MemberTraining],
        num_classes: int,
        *,
        config: dict[str, Any] | list[dict[str, Any]] | None = None,
    ):
        super().__init__()
        self.automatic_optimization = False  # see the module docstring
        self.model = model
        self.specs = list(members)
        count = len(model)
        if len(self.specs) != count:
            raise ValueError(f"{count} networks but {len(self.specs)} members")
        self.config = config or {}
        self.num_classes = num_classes
        self.weight_names = weight_matrix_names(model.networks)
        # every regularizer a member uses (normlab.lit.regularizers), by where it acts
        self.regularizers = nn.ModuleDict(member_regularizers(self.specs, model))
        self.acting_on = {
            place: [r for r in self.regularizers.values() if r.acts_on == place] for place in PLACES
        }
        # what training has done to each member (saved in checkpoints)
        self.register_buffer("active", torch.ones(count, dtype=torch.bool))
        self.register_buffer("diverged_at", torch.full((count,), -1, dtype=torch.int64))
        self.register_buffer("diverged_loss", torch.zeros(count))
        self.register_buffer("stopped_at", torch.full((count,), -1, dtype=torch.int64))
        self.register_buffer("val_acc_best", torch.full((count,), -torch.inf))
        # per member: loss sum, correct count, example count since the last logged step (kept
        # in checkpoints so a resumed run logs the same numbers as an uninterrupted one)
        self.register_buffer("train_sums", torch.zeros(count, 3))
        self.register_buffer("eval_sums", torch.zeros(count, 3), False)
        self.stopped_buffers: dict[str, torch.Tensor] = {}  # buffers of members at their stop
        self.latest: dict[str, torch.Tensor] = {}  # the latest logged [M] values, by name
        self.tested: dict[str, list] = {}  # the test phase's per-member values, by name
        self.schedules: MemberSchedules | None = None
        self.restored_rank_sums: torch.Tensor | None = None  # per-rank sums of a DDP checkpoint
        self.restored_rank_rng = False  # each rank's own random state came from a checkpoint
        self.restored_schedules: dict | None = None

    @property
    def members(self) -> int:
        """M, the number of members."""
        return len(self.model)

    def active_list(self) -> list[bool]:
        """Which members still train (one host read)."""
        return self.active.tolist()

    def best_val_acc(self) -> list[float | None]:
        """Each member's best validation accuracy so far (None before any validation)."""
        return [v if math.isfinite(v) else None for v in self.val_acc_best.tolist()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, shared=True)

    # --- training ---

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch  # [M, B, ...], [M, B]
        for regularizer in self.acting_on["batch"]:
            x = regularizer.batch(x)
        logits = self.model(x)
        losses = member_cross_entropy(logits, y)  # what train/loss logs
        objective = losses
        for regularizer in self.acting_on["loss"]:
            objective = objective + regularizer.loss(self, logits, y)
        total = objective.sum()
        step = self.global_step
        logging = (step + 1) % self.trainer.log_every_n_steps == 0
        rates = (
            self.member_optimizer.lr.clone() if logging else None
        )  # the rates this step trains at
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(total)
        with torch.no_grad():
            for regularizer in self.acting_on["gradients"]:
                regularizer.gradients(self)
        optimizer.step()  # runs the on_before_optimizer_step hooks, counts the global step
        with torch.no_grad():
            for regularizer in self.acting_on["weights"]:
                regularizer.weights(self)
        if self.schedules is not None:
            self.schedules.step("step", batch_idx + 1)
            if batch_idx + 1 == self.trainer.num_training_batches:
                self.schedules.step("epoch", self.current_epoch + 1)
        with torch.no_grad():
            hits = (logits.argmax(dim=2) == y).sum(dim=1)
            size = torch.full_like(losses, y.shape[1])
            window = torch.stack((losses.detach() * y.shape[1], hits.to(losses.dtype), size), 1)
            self.train_sums.add_(window * self.active.unsqueeze(1))
        if logging:
            self._log_train_window(step, rates)
        if self._last_step(batch_idx):
            # Lightning validates after a batch that asks the fit to stop: so every run ends
            # with a validation (val/acc_best is its result), whatever val_check_interval says
            self.trainer.should_stop = True
        return total.detach()

    def _last_step(self, batch_idx: int) -> bool:
        """Whether the step just taken is the fit's last (by max_steps or max_epochs)."""
        trainer = self.trainer
        if trainer.max_steps >= 0 and self.global_step >= trainer.max_steps:
            return True
        epochs = trainer.max_epochs
        last_epoch = epochs is not None and epochs >= 0 and self.current_epoch + 1 >= epochs
        return last_epoch and batch_idx + 1 == trainer.num_training_batches

    def global_batch_size(self, y: torch.Tensor) -> int:
        """The training batch's examples per member over every DDP rank (`y`: `[M, B]`)."""
        return y.shape[1] * self.trainer.world_size

    @property
    def member_optimizer(self) -> MemberOptimizer:
        """The run's MemberOptimizer (Lightning's wrapper unwrapped)."""
        return self.trainer.optimizers[0]

    def _log_train_window(self, step: int, rates: torch.Tensor) -> None:
        """Log the window that ends with `step`, mask the members whose loss turned
        non-finite, start anew."""
        # summed over DDP ranks (a no-op on one device): the logged loss is the global batch's
        sums = self.trainer.strategy.reduce(self.train_sums.clone(), reduce_op="sum")
        loss, acc = sums[:, 0] / sums[:, 2], sums[:, 1] / sums[:, 2]
        finite = torch.isfinite(sums[:, 0])
        diverging = self.active & ~finite
        self.diverged_at.copy_(torch.where(diverging, step, self.diverged_at))
        self.diverged_loss.copy_(torch.where(diverging, loss, self.diverged_loss))
        counted = self.active & finite
        self.active.copy_(counted)
        self.log_members({"train/loss": loss, "train/acc": acc, "train/lr": rates}, step, counted)
        self.train_sums.zero_()
        self._stop_when_done()

    def _stop_when_done(self) -> None:
        if not bool(self.active.any()):
            self.trainer.should_stop = True

    # --- evaluation ---

    def _evaluate(self, batch) -> None:
        x, y = batch
        logits = self.model(x, shared=True)  # [M, B, C]
        members, size = logits.shape[:2]
        labels = y.expand(members, size)
        losses = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none"
        )
        hits = (logits.argmax(dim=2) == labels).sum(dim=1).to(losses.dtype)
        count = torch.full_like(hits, size)
        self.eval_sums.add_(torch.stack((losses.view(members, size).sum(1), hits, count), 1))

    def _evaluated(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean loss and accuracy of the evaluation just done (over every rank), reset."""
        sums = self.trainer.strategy.reduce(self.eval_sums.clone(), reduce_op="sum")
        self.eval_sums.zero_()
        return sums[:, 0] / sums[:, 2], sums[:, 1] / sums[:, 2]

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch)

    def on_validation_epoch_start(self) -> None:
        self.eval_sums.zero_()

    def on_validation_epoch_end(self) -> None:
        loss, acc = self._evaluated()
        if self.trainer.sanity_checking:
            return
        counted = self.active.clone()
        self.val_acc_best.copy_(
            torch.where(counted, torch.maximum(self.val_acc_best, acc), self.val_acc_best)
        )
        metrics = {"val/loss": loss, "val/acc": acc, "val/acc_best": self.val_acc_best.clone()}
        fitting = self.trainer.state.fn == "fit"
        self.log_members(metrics, self.global_step - 1 if fitting else self.global_step, counted)
        if fitting:
            for regularizer in self.acting_on["validation"]:
                self._stop_members(regularizer.validation(metrics, self.active))

    def _stop_members(self, stopping: torch.Tensor) -> None:
        """Early stopping of the members in `stopping`: mask them, keep their buffers as they are
        now (their weights no longer move; their running statistics would)."""
        if not bool(stopping.any()):
            return
        self.stopped_at.copy_(torch.where(stopping, self.global_step, self.stopped_at))
        self.active.copy_(self.active & ~stopping)
        for name, buffer in self.model.stacked_buffers():
            kept = self.stopped_buffers.get(name, buffer)
            rows = stopping.view(-1, *[1] * (buffer.dim() - 1))
            self.stopped_buffers[name] = torch.where(rows, buffer, kept).clone()
        self._stop_when_done()

    def on_train_end(self) -> None:
        # a stopped member's running statistics went on moving: put back those of its stop
        stopped = self.stopped_at >= 0
        for name, buffer in self.model.stacked_buffers():
            if name in self.stopped_buffers:
                rows = stopped.view(-1, *[1] * (buffer.dim() - 1))
                buffer.copy_(torch.where(rows, self.stopped_buffers[name], buffer))

    def on_validation_model_zero_grad(self) -> None:
        # Lightning's default sets every parameter's .grad to None; here they stay views of the
        # flat gradient (zeroed in place)
        self.model.zero_grad()

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch)

    def on_test_epoch_start(self) -> None:
        self.eval_sums.zero_()
        self.tested = {}

    def on_test_epoch_end(self) -> None:
        loss, acc = self._evaluated()
        tested = self.diverged_at < 0  # an early-stopped member is tested (as it stopped)
        self.log_members({"test/loss": loss, "test/acc": acc}, self.global_step, tested)

    # --- logging ---

    def log_members(
        self,
        metrics: dict[str, torch.Tensor | Sequence],
        step: int,
        counted: torch.Tensor | Sequence[bool] | None = None,
    ) -> None:
        """Log one value per member under each name (an `[M]` tensor, or a list with None for a
        member without one) to the members' own loggers, leaving out the members `counted`
        excludes; tensors are recorded in `latest`, and the test's values in `tested`."""
        tensors = {n: v for n, v in metrics.items() if isinstance(v, torch.Tensor)}
        columns = {n: list(v) for n, v in metrics.items() if n not in tensors}
        if tensors:
            rows = torch.stack([v.to(torch.float64) for v in tensors.values()])
            for name, row in zip(tensors, rows, strict=True):
                self.latest[name] = row
            columns.update(zip(tensors, rows.tolist(), strict=True))
        keep = counted.tolist() if isinstance(counted, torch.Tensor) else counted
        if keep is not None:
            columns = {
                name: [v if kept else None for v, kept in zip(column, keep, strict=True)]
                for name, column in columns.items()
            }
        if self.trainer.testing:
            self.tested.update(columns)
        for logger in self.loggers:
            logger.log_metrics({**columns, "epoch": self.current_epoch}, step)

    # --- optimizer and schedules ---

    def configure_optimizers(self):
        """One MemberOptimizer over every member (member-wise settings), and the members'
        schedules (they act on its `[M]` learning rates)."""
        specs, model = self.specs, self.model
        arguments: dict[str, Any] = {}  # decay and clipping act inside its step
        for regularizer in self.acting_on["optimizer"]:
            arguments.update(regularizer.optimizer_arguments(self))
        optimizer = member_optimizer(
            model,
            [s.optimizer_factory for s in specs],
            active=lambda: self.active,
            **arguments,
        )
        schedules = [s.schedule or MemberSchedule(None) for s in specs]
        if any(member.schedule is not None for member in schedules):
            self.schedules = MemberSchedules(
                schedules, optimizer.lr, optimizer.param_groups[0]["initial_lr"]
            )
            if self.restored_schedules is not None:
                self.schedules.load_state_dict(self.restored_schedules)
                self.restored_schedules = None
        return optimizer

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets `_current_fx_name` around every hook call, some 40 times a step, and
        # nn.Module.__setattr__ (parameter, buffer and submodule checks) made that a sizeable
        # part of a small model's step. A plain attribute: the plain setter is equivalent.
        if name == FX_NAME_ATTRIBUTE:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # --- checkpoints ---

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # every row logged so far is on disk with the checkpoint: a resumed run keeps them
        for logger in self.loggers:
            logger.save()
        checkpoint["normlab_config"] = self.config  # a checkpoint names the config that made it
        # every random stream a member draws from (dropout / dropconnect / augmentation)
        checkpoint["normlab_rng"] = self.model.randomness.state_dict(self.device)
        checkpoint["normlab_stopped_buffers"] = dict(self.stopped_buffers)
        if self.schedules is not None:
            checkpoint["normlab_schedules"] = self.schedules.state_dict()
        if self.trainer.world_size > 1:
            # every rank saves (rank 0 writes): keep each rank's window sums, or the resumed
            # run's first logged train/loss and train/acc would differ from an uninterrupted one
            checkpoint["normlab_rank_train_sums"] = self.all_gather(self.train_sums).cpu()
            # and each rank's random streams (dropout masks differ across ranks)
            checkpoint["normlab_rank_rng"] = gather_rank_states(
                self.model.randomness.state_dict(self.device), self.all_gather
            )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # early stopping's state was `early_stopping.*` before regularizers had a table
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("early_stopping.")]:
            state[f"regularizers.early_stopping.rule.{key.partition('.')[2]}"] = state.pop(key)
        if "normlab_rng" in checkpoint:
            self.model.randomness.load_state_dict(checkpoint["normlab_rng"])
        self.stopped_buffers = dict(checkpoint.get("normlab_stopped_buffers", {}))
        self.restored_schedules = checkpoint.get("normlab_schedules")
        self.restored_rank_sums = checkpoint.get("normlab_rank_train_sums")
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
        self.stopped_buffers = {k: v.to(self.device) for k, v in self.stopped_buffers.items()}
        if self.schedules is not None and self.restored_schedules is not None:
            self.schedules.load_state_dict(self.restored_schedules)
            self.restored_schedules = None

    # --- results ---

    def member_results(self) -> list[dict[str, Any]]:
        """Each member's outcome: status, steps, test metrics, val/acc_best (for result.json)."""
        diverged_at, losses = self.diverged_at.tolist(), self.diverged_loss.tolist()
        stopped_at = self.stopped_at.tolist()
        best = self.best_val_acc()
        results = []
        for member in range(self.members):
            tests = {
                name: column[member]
                for name, column in self.tested.items()
                if column[member] is not None
            }
            result: dict[str, Any] = {"status": "completed", **tests}
            steps = self.global_step
            if stopped_at[member] >= 0:  # early stopping: the run ended at that validation
                steps = stopped_at[member]
            if diverged_at[member] >= 0:
                step = diverged_at[member]
                result = {
                    "status": "diverged",
                    "error": f"training loss {losses[member]} at step {step}",
                    "diverged_at_step": step,
                }
                steps = step + 1
            result["val/acc_best"] = best[member]
            result["steps"] = steps
            results.append(result)
        return results
