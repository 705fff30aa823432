"""normlab's DDP strategy: Lightning's DDPStrategy with run-folder rules for Hydra and sweeps.

Lightning's `ddp` launcher re-executes the command line (sys.argv) in every extra rank. Under
Hydra that makes a run folder per rank, and in a multirun each rank starts the whole sweep
again. Here the extra ranks of a node run `python -m normlab.rank_worker` instead: it reads the
resolved config and rank 0's run folder from its environment and joins that run, writing
nothing. Under SLURM or torchrun the cluster starts every rank and this launcher starts none.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from datetime import timedelta
from inspect import signature
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.plugins.layer_sync import LayerSync
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from normlab.lit.lightning_compat import DDPStrategyWithLauncher, ScriptLauncher
from normlab.models.members import MemberNetworks
from normlab.models.sync_batchnorm import convert_to_sync, revert_from_sync
from normlab.utils.ranks import world_size

log = logging.getLogger("normlab")

JOIN_ENV = "NORMLAB_JOIN_RUN"  # JSON {run_dir, threads, config} for a rank joining rank 0's run
PARENT_ENV = "NORMLAB_RANK_PARENT"  # rank 0's pid: a joining rank ends when that process ends
# variables the launcher sets in rank 0's own environment; restored when the run ends
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# no buffer broadcast before each forward (torch >= 2.13 renamed the flag)
_NO_FORWARD_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in signature(DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


class RankJoiningLauncher(ScriptLauncher):
    """Starts local ranks 1..N-1 as `python -m normlab.rank_worker` joining this run's folder."""

    def __init__(self, cluster_environment, num_processes: int, num_nodes: int, config: DictConfig):
        super().__init__(cluster_environment, num_processes, num_nodes)
        self.config = config
        self._saved_env: dict[str, str | None] | None = None
        self._watching = False

    def launch(self, function, *args, trainer=None, **kwargs):
        self.cluster_environment.validate_settings(
            num_devices=self.num_processes, num_nodes=self.num_nodes
        )
        if not self.cluster_environment.creates_processes_externally:  # first call (fit) only
            self._start_ranks(trainer.default_root_dir)
        return function(*args, **kwargs)

    def _start_ranks(self, run_dir: str) -> None:
        self.check_can_spawn_children()
        environment = self.cluster_environment
        self._saved_env = {key: os.environ.get(key) for key in _LAUNCH_ENV}
        # LOCAL_RANK=0 here also tells the later trainer.test() that the ranks already exist
        os.environ.update(
            MASTER_ADDR=environment.main_address,
            MASTER_PORT=str(environment.main_port),
            NODE_RANK=str(environment.node_rank()),
            LOCAL_RANK="0",
            WORLD_SIZE=str(self.num_processes * self.num_nodes),
        )
        threads = torch.get_num_threads()
        job = {
            "run_dir": run_dir,
            "threads": threads,
            "config": OmegaConf.to_container(self.config, resolve=True, enum_to_str=True),
        }
        for local_rank in range(1, self.num_processes):
            env = {
                **os.environ,
                "LOCAL_RANK": str(local_rank),
                "OMP_NUM_THREADS": str(threads),
                JOIN_ENV: json.dumps(job),
                PARENT_ENV: str(os.getpid()),
            }
            self.procs.append(
                subprocess.Popen([sys.executable, "-m", "normlab.rank_worker"], env=env)
            )
        self._watching = True
        threading.Thread(target=self._watch, daemon=True, name="normlab-rank-watch").start()

    def _watch(self) -> None:
        """A rank that dies takes its siblings down, so none waits forever in a collective.

        Rank 0 then fails: at once over gloo (the broken connection), and over NCCL, which
        would wait out the process-group timeout for the dead peer, because its collectives
        are aborted here. A sweep records the cell as failed and goes on (Lightning's own
        watcher would kill rank 0, and with it the whole sweep). The other way round, ranks
        end with rank 0 by themselves (normlab.rank_worker)."""
        while self._watching:
            dead = [proc for proc in self.procs if proc.poll() not in (None, 0)]
            if dead:
                for proc in self.procs:
                    if proc.poll() is None:
                        proc.kill()
                log.error(
                    "rank process %d ended (code %s): the run fails", dead[0].pid, dead[0].poll()
                )
                _abort_nccl()
                return
            threading.Event().wait(0.5)

    def release(self) -> None:
        """Wait for the started ranks (killed after 60 s), then restore rank 0's environment."""
        self._watching = False
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                log.warning("rank process %d did not finish; killed", proc.pid)
                proc.kill()
                proc.wait()
        for key, value in (self._saved_env or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = None


def _abort_nccl() -> None:
    """Fail this process's pending NCCL collectives now (gloo's fail by themselves)."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        from torch.distributed.distributed_c10d import _abort_process_group

        _abort_process_group()


class NormlabDDPStrategy(DDPStrategyWithLauncher):
    """DDP whose extra ranks join rank 0's run folder (see the module docstring).

    DDP's per-step buffer broadcast is off: the module's training-loss sums are per-rank partial
    sums (reduced when logged), which a broadcast would overwrite. Batch-norm running statistics
    are instead broadcast from rank 0 before each evaluation, so every rank evaluates the model
    that rank 0 checkpoints. With `norm.sync` they agree anyway (identical all-reduced inputs).
    """

    def __init__(self, config: DictConfig, **kwargs):
        super().__init__(**_NO_FORWARD_BUFFER_SYNC, **kwargs)
        self.config = config
        # val/test metrics are torchmetrics objects: their compute() already syncs the ranks
        warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed.*")

    def make_launcher(self) -> RankJoiningLauncher:
        """Rank 0's launcher of the node's other ranks (see the module docstring)."""
        return RankJoiningLauncher(
            self.cluster_environment, self.num_processes, self.num_nodes, self.config
        )

    def on_train_start(self) -> None:
        super().on_train_start()
        # Lightning seeds every rank alike: without this, dropout and augmentation would draw the
        # same masks for every rank's share of the batch. A resumed run that restored each rank's
        # own random state from the checkpoint keeps it (a checkpoint from another world size
        # has none to give, so those ranks are decorrelated here as in a fresh run).
        module = self.lightning_module
        restored = getattr(module, "restored_rank_rng", False)
        if self.global_rank and not restored:
            torch.manual_seed(torch.initial_seed() + self.global_rank)
            module.model.randomness.decorrelate(self.global_rank)
        if self.is_global_zero:
            batch = self.config.data.batch_size
            log.info(
                "global batch %d = %d ranks x %d per device; batch-norm statistics %s",
                batch,
                self.world_size,
                batch // self.world_size,
                "synchronized" if self.config.norm.sync else "per device",
            )

    def on_validation_start(self) -> None:
        super().on_validation_start()
        for networks in _member_networks(self.lightning_module):
            for _, buffer in networks.stacked_buffers():  # batch-norm running statistics
                dist.broadcast(buffer, src=0)

    def release(self) -> None:
        """End of the run: leave the process group; rank 0 also releases the ranks it started."""
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        if isinstance(self.launcher, RankJoiningLauncher):
            self.launcher.release()


def _member_networks(model: nn.Module) -> list[MemberNetworks]:
    return [module for module in model.modules() if isinstance(module, MemberNetworks)]


class BatchNormSync(LayerSync):
    """Lightning plugin for `norm.sync`: DDP switches the batch norms to statistics over all
    ranks when fit starts and back after: the members' batched batch norm, and the batch-norm
    layers of a network trained through its own forward (over NCCL to PyTorch's fused
    SyncBatchNorm)."""

    def apply(self, model: nn.Module) -> nn.Module:
        fused = dist.get_backend() == "nccl"
        for networks in _member_networks(model):
            networks.sync_batch_norm = True
            networks.apply_to_networks(lambda network: convert_to_sync(network, fused=fused))
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        for networks in _member_networks(model):
            networks.sync_batch_norm = False
            networks.apply_to_networks(revert_from_sync)
        return model


def _tensors(state) -> list[torch.Tensor]:
    """The tensors of a nest of dicts and lists, in a fixed order."""
    if isinstance(state, torch.Tensor):
        return [state]
    items = [state[key] for key in sorted(state)] if isinstance(state, dict) else state
    return [tensor for item in items for tensor in _tensors(item)]


def _refill(state, tensors: list[torch.Tensor]):
    """`state`'s nest with its tensors, in `_tensors` order, replaced by `tensors` (consumed)."""
    if isinstance(state, torch.Tensor):
        return tensors.pop(0)
    if isinstance(state, dict):
        return {key: _refill(state[key], tensors) for key in sorted(state)}
    return [_refill(item, tensors) for item in state]


def gather_rank_states(local: dict, all_gather: Callable[[torch.Tensor], torch.Tensor]) -> list:
    """Every rank's random streams (`MemberRandomness.state_dict()`), rank r's at index r, on
    every rank.

    One collective: the states travel as one flat byte tensor (every rank has the same layout:
    the same config and the same kind of device)."""
    flat = [part.flatten() for part in _tensors(local)]
    gathered = all_gather(torch.cat(flat)).cpu()  # [world, bytes]
    sizes = [part.numel() for part in flat]
    return [_refill(local, [state.clone() for state in row.split(sizes)]) for row in gathered]


def rank_state(saved: list, rank: int) -> dict:
    """Rank `rank`'s streams in a checkpoint's `normlab_rank_rng` (`gather_rank_states`)."""
    return saved[rank]


def distributed_kwargs(cfg) -> dict[str, Any]:
    """Trainer arguments of a multi-process run: normlab's DDP strategy and, with `norm.sync`,
    batch norms synchronized across ranks. Empty for a single process."""
    strategy = cfg.trainer.strategy
    if not (strategy == "ddp" or (strategy == "auto" and world_size(cfg.trainer) != 1)):
        return {}
    timeout = timedelta(seconds=cfg.trainer.process_group_timeout_s)
    return {
        "strategy": NormlabDDPStrategy(cfg, timeout=timeout),
        "plugins": [BatchNormSync()] if cfg.norm.sync else [],
    }


def batch_layout(trainer, cfg) -> dict[str, Any]:
    """How the global batch was split, for result.json."""
    world = trainer.world_size
    environment = getattr(trainer.strategy, "cluster_environment", None)
    return {
        "world_size": world,
        "per_device_batch_size": cfg.data.batch_size // world,
        "norm_sync": bool(world > 1 and cfg.norm.sync),
        "cluster": type(environment).__name__ if environment is not None else None,
    }


def finish_distributed(trainer) -> None:
    """Leave the process group; rank 0 also waits for the ranks it started and restores its
    environment, so the next cell of a sweep starts a fresh group."""
    release = getattr(trainer.strategy, "release", None)
    if release is not None:
        release()
