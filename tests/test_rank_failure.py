"""A dead rank ends the run fast: two CPU ranks over gloo stand in for GPUs over NCCL.

Rank 0 SIGKILLed: its rank worker gets the kernel's parent-death signal (normlab.rank_worker),
whether it was still starting (on today's main it then waited for rank 0's rendezvous until the
process-group timeout) or training. A worker SIGKILLed: rank 0's watch kills the other ranks,
aborts NCCL's collectives (a stand-in records the call here), and the sweep records the cell as
failed, well within the process-group timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from pytorch_lightning.plugins.environments import LightningEnvironment

from conftest import cli_environment
from helpers import start_training
from normlab.lit import ddp
from normlab.lit.ddp import RankJoiningLauncher, distributed_kwargs

# slow enough steps that a run is still training when it is killed
ENDLESS = [
    "data=synthetic",
    "data.num_samples=20000",
    "trainer=ddp_cpu",
    "trainer.max_steps=100000",
    "trainer.val_check_interval=50",
    "threads=1",
]
BOUND_S = 20  # a dead rank's run ends within this (the process-group timeout below: 120 s)


def rank_workers(parent: int) -> list[int]:
    """The pids of `parent`'s `python -m normlab.rank_worker` children."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"normlab.rank_worker" in command:
            pids.append(int(entry.name))
    return pids


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its reaper does not)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for_worker(process: subprocess.Popen, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.stderr.read()[-3000:]
        workers = rank_workers(process.pid)
        if workers:
            return workers[0]
        time.sleep(0.05)
    raise AssertionError("no rank worker started")


def wait_until(test, timeout: float) -> float:
    """Seconds until `test()` holds (AssertionError after `timeout`)."""
    started = time.time()
    while not test():
        assert time.time() - started < timeout, f"not within {timeout}s"
        time.sleep(0.05)
    return time.time() - started


def wait_for_training(run_dir: Path, process: subprocess.Popen, timeout: float = 180) -> None:
    """Until rank 0 has trained and checkpointed its first validation interval."""
    wait_until(lambda: (run_dir / "checkpoints" / "last.ckpt").is_file(), timeout)
    assert process.poll() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(
    "phase",
    ["starting", pytest.param("training", marks=pytest.mark.slow)],  # ~20 s each here
)
def test_sigkill_to_rank_zero_leaves_no_rank_worker(tmp_path, phase):
    run_dir = tmp_path / "run"
    process = start_training(cli_environment(tmp_path), *ENDLESS, f"hydra.run.dir={run_dir}")
    workers = []
    try:
        workers.append(wait_for_worker(process))
        worker = workers[0]
        if phase == "training":
            wait_for_training(run_dir, process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        waited = wait_until(lambda: not alive(worker), BOUND_S)
    finally:
        if process.poll() is None:
            process.kill()
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert waited < BOUND_S


@pytest.mark.slow  # ~28 s here
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_to_a_worker_fails_the_cell_fast_and_rank_zero_exits(tmp_path):
    env = cli_environment(tmp_path)
    process = start_training(env, "-m", *ENDLESS, "trainer.process_group_timeout_s=120")
    try:
        worker = wait_for_worker(process)
        sweeps = tmp_path / "outputs" / "multirun" / "default"
        wait_until(lambda: any(sweeps.glob("*/*/checkpoints/last.ckpt")), 180)
        os.kill(worker, signal.SIGKILL)
        killed = time.time()
        _, stderr = process.communicate(timeout=120)
        ended = time.time() - killed
    finally:
        if process.poll() is None:
            process.kill()
    assert ended < BOUND_S, f"rank 0 ended {ended:.1f}s after its worker"
    [result] = sweeps.glob("*/*/result.json")
    recorded = json.loads(result.read_text())
    assert recorded["status"] == "failed", recorded
    assert process.returncode == 0, stderr[-3000:]  # the sweep itself goes on and ends


def test_the_process_group_timeout_is_the_configured_one(compose_cfg):
    cfg = compose_cfg("data=synthetic", "trainer=ddp_cpu", "trainer.process_group_timeout_s=42")
    strategy = distributed_kwargs(cfg)["strategy"]
    assert strategy._timeout == timedelta(seconds=42)
    default = distributed_kwargs(compose_cfg("data=synthetic", "trainer=ddp_cpu"))["strategy"]
    assert default._timeout == timedelta(seconds=300)


def test_a_dead_rank_kills_its_siblings_and_aborts_the_collectives(monkeypatch):
    aborted = threading.Event()
    monkeypatch.setattr(ddp, "_abort_nccl", aborted.set)
    launcher = RankJoiningLauncher(LightningEnvironment(), 3, 1, config=None)
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    launcher.procs = [subprocess.Popen(sleep), subprocess.Popen(sleep)]
    launcher._watching = True
    watch = threading.Thread(target=launcher._watch, daemon=True)
    watch.start()
    try:
        assert not aborted.wait(1.0), "aborted while every rank ran"
        launcher.procs[0].kill()
        assert aborted.wait(5.0)
        assert launcher.procs[1].wait(timeout=5) == -signal.SIGKILL
    finally:
        for proc in launcher.procs:
            proc.kill()
            proc.wait()
