"""Mini-batches sliced from resident tensors: no per-sample collation, no worker processes.

The BatchNorm paper's budget is 50,000 steps of 60 examples; with a DataLoader the per-sample
collation costs more than the 3x100 MLP itself, so batches are index slices of one tensor.

Training batches are the members' (MemberBatches: `[M, B, ...]`, each member its own order);
evaluation batches are one shared batch (ResidentBatches).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from normlab.lit.lightning_compat import present_as_dataloader


def epoch_order(count: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of `count` examples in `epoch` of a run with batch-order seed `seed`."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(count, generator=generator)


def rank_share(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's contiguous share of a global batch's indices (the last dimension) under DDP,
    so the ranks together see exactly the batch a single process would."""
    if world_size == 1:
        return batch
    share = -(-batch.shape[-1] // world_size)
    return batch[..., rank * share : (rank + 1) * share]


class ResidentBatches:
    """Iterable of (x, y) batches over tensors, in order or shuffled per epoch."""

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
    ):
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        present_as_dataloader(self)  # Lightning calls set_epoch at each epoch start

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of `epoch` (called by Lightning's loops)."""
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(len(self.y), self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.shuffle:
            order = epoch_order(len(self.y), self.seed, self.epoch).to(self.y.device)
        else:
            order = torch.arange(len(self.y), device=self.y.device)
        size = self.batch_size
        for index in range(len(self)):
            batch = rank_share(order[index * size : (index + 1) * size], self.rank, self.world_size)
            yield self.x[batch], self.y[batch]


class MemberBatches:
    """The training batches of M members over the same data: each member its own order (from
    its batch-order seed, as its solo run would walk it), all walked in lockstep. A batch is
    `x` `[M, B, ...]`, `y` `[M, B]`: one slice of the members' orders, one gather.

    Its position in the epoch is saved in checkpoints (Lightning asks `state_dict`), so a run
    resumed mid-epoch continues with the batches it had not taken.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        seeds: Sequence[int],
        *,
        rank: int = 0,
        world_size: int = 1,
        steps_done: Callable[[], int] | None = None,
    ):
        self.x, self.y = x, y
        self.batch_size, self.seeds = batch_size, list(seeds)
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        # Resuming mid-epoch: `steps_done` reads the trainer's global step, so the checkpoint
        # records how many batches of this epoch were consumed (not merely prefetched).
        self.steps_done = steps_done
        self.epoch_start_step = 0
        self.skip: tuple[int, int] | None = None  # (epoch, batches consumed) of a checkpoint
        self._orders: tuple[int, torch.Tensor] | None = None  # (epoch, [M, N] orders)
        present_as_dataloader(self)  # Lightning calls set_epoch at each epoch start and on resume

    def set_epoch(self, epoch: int) -> None:
        """Select every member's permutation of `epoch`."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.y) // self.batch_size  # the last, partial batch is dropped

    def state_dict(self) -> dict[str, int]:
        """Position in the epoch, saved in checkpoints by Lightning's fit loop."""
        consumed = self.steps_done() - self.epoch_start_step if self.steps_done else 0
        return {"epoch": self.epoch, "consumed": consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue the saved epoch's permutations after its consumed batches (a checkpoint
        taken at an epoch's last batch resumes at the next epoch: nothing to skip there)."""
        self.epoch, self.skip = state["epoch"], (state["epoch"], state["consumed"])

    def orders(self) -> torch.Tensor:
        """Every member's example order of the current epoch, `[M, N]` (made once per epoch)."""
        if self._orders is None or self._orders[0] != self.epoch:
            count = len(self.y)
            orders = torch.stack([epoch_order(count, seed, self.epoch) for seed in self.seeds])
            self._orders = (self.epoch, orders.to(self.y.device))
        return self._orders[1]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        saved, self.skip = self.skip, None
        skip = saved[1] if saved is not None and saved[0] == self.epoch else 0
        if self.steps_done:
            self.epoch_start_step = self.steps_done() - skip
        orders, size = self.orders(), self.batch_size
        for index in range(skip, len(self)):
            batch = rank_share(
                orders[:, index * size : (index + 1) * size], self.rank, self.world_size
            )
            yield self.x[batch], self.y[batch]
