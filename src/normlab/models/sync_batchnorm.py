"""Batch norm whose statistics span all ranks: the single-device experiment on N devices.

With per-device statistics a global batch of 60 on 4 devices is normalized over 15 examples
each; synchronized statistics normalize over all 60 again. PyTorch's SyncBatchNorm runs on GPUs
only (DDP: "SyncBatchNorm layers only work with GPU modules"), so the layers here compute the
same statistics on any backend (CPU processes over gloo included) with a differentiable all-reduce;
over NCCL the conversion picks PyTorch's layer and its fused kernels.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; its gradient is the sum of every rank's gradient (each rank's loss
    depends on the shared statistics)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def synced_batch_norm(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    num_batches_tracked: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    momentum: float | None,
    eps: float,
) -> torch.Tensor:
    """Training-mode batch norm of `x` (`[N, C, ...]`) with per-channel statistics over the
    batches of all ranks; the running statistics (when given) are updated in place."""
    reduce_dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    # Two passes (mean, then centered squares) rather than E[x^2] - E[x]^2: the numbers of
    # one process on the whole batch, not a cancellation-prone shortcut.
    count = x.new_tensor([x.numel() / x.size(1)])
    totals = _AllReduceSum.apply(torch.cat([x.sum(reduce_dims), count]))
    total_count = totals[-1].detach()
    mean = totals[:-1] / total_count
    centered = x - mean.view(shape)
    var = _AllReduceSum.apply(centered.square().sum(reduce_dims)) / total_count
    out = centered * torch.rsqrt(var + eps).view(shape)
    if weight is not None:
        out = out * weight.view(shape) + bias.view(shape)
    if running_mean is not None:
        _update_running_stats(
            running_mean,
            running_var,
            num_batches_tracked,
            momentum,
            mean.detach(),
            var.detach(),
            float(total_count),
        )
    return out


@torch.no_grad()
def _update_running_stats(running_mean, running_var, tracked, momentum, mean, var, count) -> None:
    # The all-reduce gives every rank bitwise-identical statistics, so the running
    # statistics agree across ranks without being broadcast.
    factor = momentum if momentum is not None else 1.0 / float(tracked.max())
    unbiased = var * (count / max(count - 1.0, 1.0))
    running_mean.mul_(1 - factor).add_(mean, alpha=factor)
    running_var.mul_(1 - factor).add_(unbiased, alpha=factor)


class _SyncedStatistics:
    """Mixin over a BatchNorm class: in training, statistics over the batches of all ranks."""

    unsynced_class: type[nn.modules.batchnorm._BatchNorm]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spans_ranks = self.training and dist.is_initialized() and dist.get_world_size() > 1
        if not spans_ranks:
            return super().forward(x)
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
        running = (
            (self.running_mean, self.running_var) if self.track_running_stats else (None, None)
        )
        return synced_batch_norm(
            x, *running, self.num_batches_tracked, self.weight, self.bias, self.momentum, self.eps
        )


class SyncBatchNorm1d(_SyncedStatistics, nn.BatchNorm1d):
    """BatchNorm1d with statistics over all ranks' batches (any backend)."""

    unsynced_class = nn.BatchNorm1d


class SyncBatchNorm2d(_SyncedStatistics, nn.BatchNorm2d):
    """BatchNorm2d with statistics over all ranks' batches (any backend)."""

    unsynced_class = nn.BatchNorm2d


SYNCED = {nn.BatchNorm1d: SyncBatchNorm1d, nn.BatchNorm2d: SyncBatchNorm2d}


def _swap(old: nn.modules.batchnorm._BatchNorm, new: nn.modules.batchnorm._BatchNorm) -> None:
    """Make `new` use `old`'s parameters and statistics (the optimizer keeps its references)."""
    if old.affine:
        new.weight, new.bias = old.weight, old.bias
    new.running_mean, new.running_var = old.running_mean, old.running_var
    new.num_batches_tracked = old.num_batches_tracked
    new.train(old.training)


def convert_to_sync(module: nn.Module, fused: bool = False) -> nn.Module:
    """Replace every plain BatchNorm1d/2d in `module` by a synchronized one (ghost BNs are kept).

    `fused`: PyTorch's nn.SyncBatchNorm (CUDA kernels, NCCL); DDP refuses it on CPU modules.
    """
    plain = type(module)
    if plain in SYNCED:
        args = (
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        synced = nn.SyncBatchNorm(*args) if fused else SYNCED[plain](*args)
        synced.unsynced_class = plain
        _swap(module, synced)
        return synced
    for name, child in module.named_children():
        module.add_module(name, convert_to_sync(child, fused))
    return module


def revert_from_sync(module: nn.Module) -> nn.Module:
    """Undo `convert_to_sync`: each synchronized layer becomes the class it replaced."""
    if isinstance(module, (_SyncedStatistics, nn.SyncBatchNorm)):
        plain = module.unsynced_class(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        _swap(module, plain)
        return plain
    for name, child in module.named_children():
        module.add_module(name, revert_from_sync(child))
    return module
