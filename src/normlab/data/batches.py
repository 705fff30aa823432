"""Mini-batches sliced from resident tensors: no per-sample collation, no worker processes.

The BatchNorm paper's budget is 50,000 steps of 60 examples; with a DataLoader the per-sample
collation costs more than the 3x100 MLP itself, so batches are index slices of one tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class ResidentBatches:
    """Iterable of (x, y) batches over tensors, optionally shuffled per epoch.

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
    ):
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        # Resuming mid-epoch: `steps_done` reads the trainer's global step, so the checkpoint
        # records how many batches of this epoch were consumed (not merely prefetched).
        self.steps_done = steps_done
        self.epoch_start_step = 0
        self.skip = 0
        # Lightning calls `dataloader.sampler.set_epoch(epoch)` at each epoch start (also on resume)
        self.sampler = self
        self.batch_sampler = None  # Lightning probes it to tell whether the loader shuffles

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
        for start in range(skip * self.batch_size, len(self) * self.batch_size, self.batch_size):
            batch = order[start : start + self.batch_size]
            if self.world_size > 1:
                share = -(-len(batch) // self.world_size)
                batch = batch[self.rank * share : (self.rank + 1) * share]
            yield self.x[batch], self.y[batch]
