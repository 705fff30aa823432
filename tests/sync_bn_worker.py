"""A rank of the SyncBatchNorm test, in a module of its own: spawned processes import it, and
importing the test module would cost each of them the Lightning import."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from normlab.models.sync_batchnorm import convert_to_sync, revert_from_sync


def sync_bn_rank(rank: int, world: int, port: int, out_dir: str) -> None:
    """One rank: forward and backward of SyncBatchNorm1d on its half of a fixed batch."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    x, target = torch.randn(8, 3) * 2 + 1, torch.randn(8, 3)
    layer = convert_to_sync(nn.Sequential(nn.BatchNorm1d(3)))[0]
    share = x[rank * 4 : (rank + 1) * 4].clone().requires_grad_()
    out = layer(share)
    # each rank's loss is its share's mean; DDP would average the parameter gradients
    ((out - target[rank * 4 : (rank + 1) * 4]) ** 2).mean().backward()
    torch.save(
        {
            "out": out.detach(),
            "x_grad": share.grad,
            "w_grad": layer.weight.grad,
            "running_mean": layer.running_mean,
            "running_var": layer.running_var,
            "class": type(revert_from_sync(layer)).__name__,
        },
        Path(out_dir) / f"rank{rank}.pt",
    )
    dist.destroy_process_group()
