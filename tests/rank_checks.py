"""Two gloo ranks' checks, in a module of their own: spawned processes import it, and importing
a test module would cost each of them that module's imports (Lightning comes with
normlab.lit.ddp alone). One spawn of two ranks runs every check (tests/test_ddp.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from normlab.lit.ddp import gather_rank_states, rank_state
from normlab.models.member_randomness import MemberRandomness
from normlab.models.sync_batchnorm import convert_to_sync, revert_from_sync


def run_rank_checks(rank: int, world: int, ports: tuple[int, int], out_dir: str) -> None:
    """Every check of this module on rank `rank`, each in a process group of its own."""
    sync_bn_rank(rank, world, ports[0], out_dir)
    rank_streams_round_trip(rank, world, ports[1], out_dir)


def sync_bn_rank(rank: int, world: int, port: int, out_dir: str) -> None:
    """One rank: forward and backward of SyncBatchNorm1d on its half of a fixed batch
    (`out_dir`/rank{rank}.pt)."""
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


class FakeCudaGenerator:
    """Stands in for one rank's CUDA generator: its state is 16 bytes (as Philox's), distinct per
    rank, and it records every state set on it."""

    def __init__(self, rank: int):
        self.state = torch.full((16,), 10 + rank, dtype=torch.uint8)
        self.restored: list[torch.Tensor] = []

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": self.state.clone())
        monkeypatch.setattr(
            torch.cuda, "set_rng_state", lambda state, device="cuda": self.restored.append(state)
        )


def rank_streams_round_trip(rank: int, world: int, port: int, out: str) -> None:
    """One gloo rank: save its streams as a checkpoint does, scramble them, restore its own
    (`out`/streams{rank}.pt)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    with pytest.MonkeyPatch.context() as monkeypatch:
        cuda = FakeCudaGenerator(rank)
        cuda.install(monkeypatch)
        randomness = MemberRandomness([7])
        randomness.decorrelate(rank)
        torch.rand(rank + 3, generator=randomness.generators("cpu")[0])  # streams moved on
        torch.manual_seed(100 + rank)
        torch.rand(rank + 3)  # the ranks' global streams are at different places

        def all_gather(tensor: torch.Tensor) -> torch.Tensor:
            rows = [torch.empty_like(tensor) for _ in range(world)]
            dist.all_gather(rows, tensor)
            return torch.stack(rows)

        saved_cpu = torch.get_rng_state()
        saved_member = randomness.generators("cpu")[0].get_state()
        # a GPU run's state (the run's device decides, not what this process initialized)
        checkpoint = gather_rank_states(randomness.state_dict(torch.device("cuda")), all_gather)
        torch.manual_seed(0)  # a fresh process's seeding, before the checkpoint is loaded
        fresh = MemberRandomness([7])
        fresh.load_state_dict(rank_state(checkpoint, rank))
        torch.save(
            {
                "checkpoint": checkpoint,
                "saved_cpu": saved_cpu,
                "restored_cpu": torch.get_rng_state(),
                "saved_member": saved_member,
                "restored_member": fresh.generators("cpu")[0].get_state(),
                "saved_cuda": cuda.state,
                "restored_cuda": cuda.restored,
            },
            Path(out) / f"streams{rank}.pt",
        )
    dist.destroy_process_group()
