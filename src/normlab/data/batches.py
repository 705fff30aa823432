"""Mini-batches sliced from resident tensors: no per-sample collation, no worker processes.

The BatchNorm paper's budget is 50,000 steps of 60 examples; with a DataLoader the per-sample
collation costs more than the 3x100 MLP itself, so batches are index slices of one tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import torch

from normlab.lit.lightning_compat import present_as_dataloader


class ChunkPlan(Protocol):
    """Where a run of optimizer steps must end (normlab.lit.step_plan.StepPlan implements it)."""

    steps_per_call: int

    def ends_chunk(self, steps_done: int, epoch_steps_done: int) -> bool:
        """Whether a chunk must end once `steps_done` steps (`epoch_steps_done` of this epoch)
        are taken: something happens there (validation, logging, a recording)."""

    def validation_due(self, steps_done: int, epoch_steps_done: int) -> bool:
        """Whether validation runs once `steps_done` (`epoch_steps_done`) steps are taken."""


class StepChunk(NamedTuple):
    """Consecutive training batches for one `training_step` call: `x` and `y` hold them back to
    back (`sizes` rows each), so one gather serves them all. `first` is the index of the first
    batch in its epoch of `epoch_steps`; `validate_after`: validation is due after the last."""

    x: torch.Tensor
    y: torch.Tensor
    sizes: tuple[int, ...]
    first: int
    epoch_steps: int
    validate_after: bool

    def batches(self):
        """The (x, y) batches, as views."""
        return zip(self.x.split(self.sizes), self.y.split(self.sizes), strict=True)


class ResidentBatches:
    """Iterable of (x, y) batches over tensors, optionally shuffled per epoch; with a `plan`,
    of StepChunks of consecutive batches (several optimizer steps per Lightning batch).

    Under DDP every rank walks the same epoch permutation (seeded by seed and epoch) and takes
    its own contiguous slice of each global batch, so the ranks together see exactly the batch a
    single process would.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        steps_done: Callable[[], int] | None = None,
        plan: ChunkPlan | None = None,
        gather: bool = True,
    ):
        self.x, self.y = x, y
        # gather=False: batches hold the example indices, not the examples (a stack's members'
        # loaders: normlab.stack.batches gathers all members' examples in one indexing)
        self.gather = gather
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        # Resuming mid-epoch: `steps_done` reads the trainer's global step, so the checkpoint
        # records how many batches of this epoch were consumed (not merely prefetched).
        self.steps_done = steps_done
        self.epoch_start_step = 0
        self.skip = 0
        # with a plan, batches come grouped in StepChunks (several optimizer steps per Lightning
        # batch); len() and the saved position still count batches
        self.plan = plan
        present_as_dataloader(self)  # Lightning calls set_epoch at each epoch start and on resume

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of `epoch` (called by Lightning's fit loop)."""
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(len(self.y), self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def state_dict(self) -> dict[str, int]:
        """Position in the epoch, saved in checkpoints by Lightning's fit loop."""
        consumed = self.steps_done() - self.epoch_start_step if self.steps_done else 0
        return {"epoch": self.epoch, "consumed": consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue the saved epoch's permutation after its consumed batches."""
        self.epoch, self.skip = state["epoch"], state["consumed"]

    def __iter__(self):
        skip, self.skip = self.skip, 0
        if self.steps_done:
            self.epoch_start_step = self.steps_done() - skip
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(len(self.y), generator=generator).to(self.y.device)
        else:
            order = torch.arange(len(self.y), device=self.y.device)
        if self.plan is not None:
            yield from self._chunks(order, skip)
            return
        for index in range(skip, len(self)):
            yield self.rows(self._batch_indices(order, index))

    def rows(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples at `indices` (without `gather`: the indices, in both places)."""
        if not self.gather:
            return indices, indices
        return self.x[indices], self.y[indices]

    def _batch_indices(self, order: torch.Tensor, index: int) -> torch.Tensor:
        """The example indices of batch `index` of the epoch (this rank's share under DDP)."""
        batch = order[index * self.batch_size : (index + 1) * self.batch_size]
        if self.world_size > 1:
            share = -(-len(batch) // self.world_size)
            batch = batch[self.rank * share : (self.rank + 1) * share]
        return batch

    def _chunks(self, order: torch.Tensor, skip: int):
        """StepChunks of at most `plan.steps_per_call` batches, each ending where the plan says
        something happens, so every hook Lightning runs between batches sees the same step it
        would without chunks."""
        plan, steps = self.plan, len(self)
        # global steps taken before this epoch (without a trainer: whole epochs so far)
        before_epoch = self.epoch_start_step if self.steps_done else self.epoch * steps
        done = skip
        while done < steps:
            first = done
            done += 1
            while (
                done < steps
                and done - first < plan.steps_per_call
                and not plan.ends_chunk(before_epoch + done, done)
            ):
                done += 1
            parts = [self._batch_indices(order, index) for index in range(first, done)]
            indices = parts[0] if len(parts) == 1 else torch.cat(parts)
            yield StepChunk(
                *self.rows(indices),
                tuple(len(part) for part in parts),
                first,
                steps,
                plan.validation_due(before_epoch + done, done),
            )
