"""One GPU per concurrent sweep job: leases (normlab.utils.gpus), tested without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from omegaconf import OmegaConf

from normlab.utils.gpus import GpuLease, own_gpu, visible_gpu_ids, wants_own_gpu


def _trainer(**overrides):
    base = {"accelerator": "gpu", "devices": 1, "num_nodes": 1, "strategy": "auto"}
    return OmegaConf.create({"trainer": {**base, **overrides}})


def test_concurrent_leases_get_distinct_devices_and_a_released_one_is_reused(tmp_path):
    first, second, third = (GpuLease(2, tmp_path) for _ in range(3))
    assert first.try_acquire() == 0
    assert second.try_acquire() == 1
    assert third.try_acquire() is None  # both taken
    first.release()
    assert third.try_acquire() == 0
    second.release()
    third.release()


def test_a_killed_job_leaves_no_stale_lease(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from normlab.utils.gpus import GpuLease; "
            f"lease = GpuLease(1, {str(tmp_path)!r}); print(lease.try_acquire(), flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "0"
        assert GpuLease(1, tmp_path).try_acquire() is None
    finally:
        holder.kill()
        holder.wait()
    lease = GpuLease(1, tmp_path)
    assert lease.try_acquire() == 0  # the kernel dropped the dead job's lock
    lease.release()


def test_waiting_job_gets_the_device_when_it_is_freed(tmp_path):
    holder = GpuLease(1, tmp_path)
    holder.try_acquire()
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from normlab.utils.gpus import GpuLease; "
            f"print(GpuLease(1, {str(tmp_path)!r}, poll_s=0.05).acquire(), flush=True)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    assert waiter.poll() is None  # still queued behind the holder
    holder.release()
    out, _ = waiter.communicate(timeout=30)
    assert out.strip() == "0"


def test_own_gpu_pins_concurrent_gpu_cells_and_leaves_others_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_GPU_LEASE_DIR", str(tmp_path))
    one, two = _trainer(), _trainer()
    with own_gpu(one, jobs=2, gpus=2) as first, own_gpu(two, jobs=2, gpus=2) as second:
        assert (first, second) == (0, 1)
        assert list(one.trainer.devices) == [0] and list(two.trainer.devices) == [1]
    for cfg, jobs, gpus in [
        (_trainer(), 1, 2),  # one job at a time: Lightning's own choice
        (_trainer(), 2, 1),  # one GPU: nothing to spread
        (_trainer(devices=2), 2, 2),  # DDP cells choose their own devices
        (_trainer(accelerator="cpu"), 2, 2),
    ]:
        before = OmegaConf.to_container(cfg.trainer)
        with own_gpu(cfg, jobs=jobs, gpus=gpus) as index:
            assert index is None
            assert OmegaConf.to_container(cfg.trainer) == before
    assert not wants_own_gpu(_trainer(num_nodes=2).trainer, 2, 2)


def test_child_device_ids_follow_the_parents_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpu_ids(2) == ["2", "3"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_gpu_ids(3) == ["0", "1", "2"]


def test_the_device_is_described_from_the_configured_accelerator_without_starting_cuda(
    monkeypatch,
):
    """A CPU run on a machine with a GPU names the CPU and never starts CUDA (naming a GPU
    does): in a gloo DDP run, rank 0 alone used to start it for provenance.json."""
    import torch

    from normlab.utils.provenance import device_description

    started = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: started.append(i) or "Fake GPU")
    # a process describes its device once: neither an earlier test's answer nor the fake GPU's
    # may outlive this test
    device_description.cache_clear()
    try:
        assert device_description("cpu").startswith("cpu: ")
        assert started == []
        assert device_description("gpu") == "cuda: Fake GPU x2"
        assert device_description("auto") == "cuda: Fake GPU x2"  # Lightning's auto takes the GPU
    finally:
        device_description.cache_clear()


def test_nccl_errors_abort_the_communicator_without_ending_the_process(monkeypatch):
    from normlab.utils.ranks import NCCL_ERROR_HANDLING_ENV, set_nccl_error_handling

    monkeypatch.delenv(NCCL_ERROR_HANDLING_ENV, raising=False)
    set_nccl_error_handling()
    assert os.environ[NCCL_ERROR_HANDLING_ENV] == "2"  # torch's default 3 ends the process
    monkeypatch.setenv(NCCL_ERROR_HANDLING_ENV, "1")
    set_nccl_error_handling()
    assert os.environ[NCCL_ERROR_HANDLING_ENV] == "1"  # the user's choice stands
