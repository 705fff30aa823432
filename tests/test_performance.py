"""The fast path by construction: resident batches are never copied per step, and the
`compile` switch trains (torch.compile on this CPU build)."""

import math

import pytest
import torch

from conftest import TINY
from normlab.data.datamodule import ResidentDataModule
from normlab.utils import threads


def test_resident_batches_skip_the_device_transfer(compose_cfg, data_dir):
    cfg = compose_cfg(*TINY)
    datamodule = ResidentDataModule(cfg.data, data_dir, order_seed=0)
    datamodule.setup()
    batch = next(iter(datamodule.train_dataloader()))
    # already on the device: the very same objects come back (no copy, no walk over the batch)
    assert datamodule.transfer_batch_to_device(batch, torch.device("cpu"), 0) is batch
    # a batch that is elsewhere still moves
    moved = datamodule.transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert all(tensor.device.type == "meta" for tensor in moved)


@pytest.mark.slow  # inductor compiles the step on first use: ~30 s here
def test_compile_true_trains_on_cpu_as_the_eager_run(run_training, tmp_path):
    compiled, _ = run_training(*TINY, "compile=true", run_dir=tmp_path / "compiled")
    eager, _ = run_training(*TINY, run_dir=tmp_path / "eager")
    assert compiled["status"] == "completed" and compiled["steps"] == 20
    assert math.isfinite(compiled["test/loss"])
    # the compiled forward computes what the eager one does (fused kernels round differently)
    assert compiled["test/loss"] == pytest.approx(eager["test/loss"], rel=1e-3)


@pytest.mark.parametrize(
    ("requested", "omp", "jobs", "expected"),
    [
        (None, None, 1, 2),  # a lone run: every core
        (None, None, 2, 1),  # two parallel jobs on 2 cores: one thread each
        (None, "8", 2, 1),  # OMP_NUM_THREADS left in the shell cannot oversubscribe the sweep
        (None, "1", 1, 1),  # ...but can lower the count
        (3, "1", 2, 3),  # an explicit threads=N wins
    ],
)
def test_thread_policy_never_oversubscribes_unless_asked(
    monkeypatch, requested, omp, jobs, expected
):
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "parallel_jobs", lambda: jobs)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    try:
        assert threads.apply_thread_policy(requested) == expected
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)
