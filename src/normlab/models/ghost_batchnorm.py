"""Ghost batch norm: one process normalizes each slice of its batch by that slice's statistics.

`norm.ghost_batches=G` reproduces, on one device, what G devices with per-device statistics
(`norm.sync=false`) compute in training: each of the G equal slices of the batch is normalized
as if it were a device's share (Hoffer et al. 2017 call these "ghost batches").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _GhostStatistics:
    """Mixin over a BatchNorm class; `ghost_batches` = 1 is that class unchanged."""

    ghost_batches: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.ghost_batches == 1:
            return super().forward(x)
        if x.size(0) % self.ghost_batches:
            raise ValueError(
                f"batch of {x.size(0)} does not split into "
                f"norm.ghost_batches={self.ghost_batches} equal slices"
            )
        slices = x.chunk(self.ghost_batches)
        out = torch.cat(
            [
                F.batch_norm(part, None, None, self.weight, self.bias, True, 0.0, self.eps)
                for part in slices
            ]
        )
        if self.track_running_stats:
            self._update_running_stats(x.detach())
        return out

    @torch.no_grad()
    def _update_running_stats(self, x: torch.Tensor) -> None:
        # One update per step with the slices' average statistics, so `momentum` keeps its
        # per-step meaning (G sequential updates would average over G times fewer steps).
        per_slice = x.reshape(self.ghost_batches, -1, x.size(1), *x.shape[2:]).transpose(1, 2)
        per_slice = per_slice.reshape(self.ghost_batches, x.size(1), -1)
        mean, var = per_slice.mean(-1).mean(0), per_slice.var(-1, unbiased=True).mean(0)
        self.num_batches_tracked.add_(1)
        factor = (
            self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        )
        self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1 - factor).add_(var, alpha=factor)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost_batches={self.ghost_batches}"


class GhostBatchNorm1d(_GhostStatistics, nn.BatchNorm1d):
    """BatchNorm1d over `ghost_batches` slices of each training batch."""

    def __init__(self, num_features: int, *, ghost_batches: int = 1, **kwargs):
        super().__init__(num_features, **kwargs)
        self.ghost_batches = ghost_batches


class GhostBatchNorm2d(_GhostStatistics, nn.BatchNorm2d):
    """BatchNorm2d over `ghost_batches` slices of each training batch."""

    def __init__(self, num_features: int, *, ghost_batches: int = 1, **kwargs):
        super().__init__(num_features, **kwargs)
        self.ghost_batches = ghost_batches
