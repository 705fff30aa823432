"""One GPU per concurrent sweep job: on a multi-GPU node, parallel jobs lease a device each.

Without this, `hydra/launcher=parallel trainer=gpu` puts every job on GPU 0 (Lightning's
`devices=1` means "the first visible GPU"). A job leases the first free device by taking an
exclusive `flock` on `<lease dir>/gpu-<i>.lock` and holds it for its training; the kernel drops
the lock when the job ends, however it ends (SIGKILL included), so a lease can never go stale.
The lease dir is per host and per user: two sweeps on one node share the devices too.
The joblib workers are reused between jobs and may have CUDA initialised already, so the job is
pinned through Lightning's `trainer.devices=[i]`, not CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, open_dict

log = logging.getLogger("normlab")

LEASE_DIR_ENV = "NORMLAB_GPU_LEASE_DIR"
GPU_ACCELERATORS = ("auto", "gpu", "cuda")


def gpu_count() -> int:
    """CUDA devices this process can see (0 without torch's CUDA)."""
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def visible_gpu_ids(count: int) -> list[str]:
    """The ids to put in a child's CUDA_VISIBLE_DEVICES for devices 0..count-1 of this process:
    its own CUDA_VISIBLE_DEVICES entries when that is set (`2,3` -> device 0 is GPU 2)."""
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    listed = [d for d in listed if d]
    if len(listed) >= count:
        return listed[:count]
    return [str(index) for index in range(count)]


def default_lease_dir() -> Path:
    return Path(
        os.environ.get(LEASE_DIR_ENV)
        or Path(tempfile.gettempdir()) / f"normlab-gpu-leases-{os.getuid()}"
    )


class GpuLease:
    """An exclusive claim on one of `count` devices, held until `release` (or process exit)."""

    def __init__(self, count: int, lease_dir: Path | None = None, poll_s: float = 0.5):
        self.count, self.poll_s = count, poll_s
        self.lease_dir = Path(lease_dir) if lease_dir else default_lease_dir()
        self.index: int | None = None
        self._handle = None

    def try_acquire(self) -> int | None:
        """The first free device's index, now leased; None when all are taken."""
        self.lease_dir.mkdir(parents=True, exist_ok=True)
        for index in range(self.count):
            handle = open(self.lease_dir / f"gpu-{index}.lock", "a+")  # noqa: SIM115 (held)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            self.index, self._handle = index, handle
            return index
        return None

    def acquire(self) -> int:
        """Wait for a free device and lease it (more jobs than GPUs: the extra ones queue)."""
        waited = False
        while (index := self.try_acquire()) is None:
            if not waited:
                log.info("all %d GPUs leased by other jobs; waiting for one", self.count)
                waited = True
            time.sleep(self.poll_s)
        return index

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle, self.index = None, None


def wants_own_gpu(trainer_cfg, jobs: int, gpus: int) -> bool:
    """A one-device GPU cell among several concurrent jobs on a node with several GPUs."""
    return (
        jobs > 1
        and gpus > 1
        and str(trainer_cfg.accelerator) in GPU_ACCELERATORS
        and trainer_cfg.devices in (1, "1")
        and trainer_cfg.num_nodes == 1
    )


@contextmanager
def own_gpu(cfg: DictConfig, jobs: int, gpus: int | None = None) -> Iterator[int | None]:
    """Inside, a concurrent GPU cell trains on a device no other job holds
    (`cfg.trainer.devices=[i]`); the device index is yielded, None where nothing is pinned."""
    gpus = gpu_count() if gpus is None else gpus
    if not wants_own_gpu(cfg.trainer, jobs, gpus):
        yield None
        return
    lease = GpuLease(gpus)
    index = lease.acquire()
    log.info("GPU %d of %d leased for this job", index, gpus)
    with open_dict(cfg):
        cfg.trainer.accelerator = "gpu"
        cfg.trainer.devices = [index]
    try:
        yield index
    finally:
        lease.release()
