"""Training batches of several members: each its own batch order (its data seed), in lockstep."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from normlab.data.batches import ResidentBatches, StepChunk


def member_steps(chunk: StepChunk, members: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A chunk's (x, y) of each optimizer step, with the member axis in front (`[M, B, ...]`)."""
    if members == 1:  # a solo run's chunk: its batches, as a stack of one
        return ((x.unsqueeze(0), y.unsqueeze(0)) for x, y in chunk.batches())
    return zip(chunk.x.split(chunk.sizes, dim=1), chunk.y.split(chunk.sizes, dim=1), strict=True)


class MemberBatches:
    """One ResidentBatches per member, walked together: every chunk holds the members' batches
    of the same steps, stacked (`x`: `[M, n, ...]`). Members share the data, its split and
    the chunk plan (the stack key), so their chunks always line up."""

    def __init__(self, loaders: Sequence[ResidentBatches]):
        """`loaders`: one per member, built with `gather=False` (each chooses its examples'
        indices; one gather here takes all members' examples)."""
        if any(loader.gather for loader in loaders):
            raise ValueError("a stack's member loaders must be built with gather=False")
        self.loaders = list(loaders)
        self.x, self.y = self.loaders[0].x, self.loaders[0].y  # the members' shared data
        # what Lightning probes on a loader (see ResidentBatches)
        self.sampler = self
        self.batch_sampler = None

    def set_epoch(self, epoch: int) -> None:
        """Select every member's permutation of `epoch`."""
        for loader in self.loaders:
            loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loaders[0])

    def state_dict(self) -> dict[str, int]:
        """The position in the epoch (the same for every member)."""
        return self.loaders[0].state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue every member's epoch after its consumed batches."""
        for loader in self.loaders:
            loader.load_state_dict(state)

    def __iter__(self) -> Iterator[StepChunk]:
        for chunks in zip(*self.loaders, strict=True):
            indices = torch.stack([chunk[0] for chunk in chunks])
            x, y = self.x[indices], self.y[indices]
            first = chunks[0]
            yield first._replace(x=x, y=y) if isinstance(first, StepChunk) else (x, y)
