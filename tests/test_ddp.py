"""Multi-device runs: two CPU processes over gloo stand in for two GPUs.

Multi-process runs go through the CLI in subprocesses, as users start them; the single-process
references train in-process. The parity runs train 30 steps of the
synthetic set and compare per-step training losses (log_every_n_steps=1).
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from conftest import cli_environment, compose_train
from helpers import normlab, start_training, wait_for_step
from normlab.config.errors import ConfigError
from normlab.config.validate import validate
from normlab.data.batches import ResidentBatches
from normlab.models.ghost_batchnorm import GhostBatchNorm1d
from normlab.models.member_randomness import MemberRandomness
from normlab.models.sync_batchnorm import SyncBatchNorm1d, convert_to_sync
from normlab.pipeline import train
from rank_checks import run_rank_checks

STEPS = 30
PARITY = [
    "data=synthetic",
    f"trainer.max_steps={STEPS}",
    "trainer.log_every_n_steps=1",
    "trainer.val_check_interval=15",
]


def normlab_train(*args: str, root: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m normlab.train ARGS` with outputs under `root`, W&B offline."""
    done = normlab("normlab.train", *args, env=cli_environment(root), timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def only_run_dir(root: Path) -> Path:
    [run_dir] = (root / "outputs" / "runs").iterdir()
    return run_dir


def train_losses(run_dir: Path) -> pd.Series:
    """train/loss by optimizer step, one row per step."""
    metrics = pd.read_csv(run_dir / "metrics.csv")
    losses = metrics.dropna(subset=["train/loss"]).set_index("step")["train/loss"]
    assert losses.index.is_unique
    return losses


# two DDP cells with per-device statistics, one sweep: its seed=0 cell is the per-device parity
# run, and the sweep itself is test_multirun_with_ddp_cpu_runs_each_cell_once's
PER_DEVICE_SWEEP = ["-m", *PARITY, "trainer=ddp_cpu", "norm.sync=false", "seed=0,1"]


def sweep_cells(root: Path) -> list[Path]:
    """The cell folders of the one sweep under `root`."""
    [sweep] = (root / "outputs" / "multirun" / "default").iterdir()
    return [path for path in sweep.iterdir() if path.is_dir() and path.name.startswith("data=")]


@pytest.fixture(scope="module")
def parity_runs(tmp_path_factory, data_dir) -> dict:
    """Run folders: two synced ranks (with W&B) through the CLI, two ranks with per-device
    statistics (a cell of PER_DEVICE_SWEEP, through the CLI), one process on the global batch
    and one with two ghost batches; and the sweep's root and log."""
    root = tmp_path_factory.mktemp("synced")
    normlab_train(*PARITY, "trainer=ddp_cpu", "logger=wandb", root=root)
    runs = {"synced": only_run_dir(root)}
    root = tmp_path_factory.mktemp("per_device")
    done = normlab_train(*PER_DEVICE_SWEEP, root=root)
    runs["sweep_root"], runs["sweep_log"] = root, done.stdout + done.stderr
    [runs["per_device"]] = [
        cell
        for cell in sweep_cells(root)
        if json.loads((cell / "result.json").read_text())["seed"] == 0
    ]
    for name, overrides in {"single": [], "ghost": ["norm.ghost_batches=2"]}.items():
        root = tmp_path_factory.mktemp(name)
        runs[name] = root / "run"
        train(compose_train(root, data_dir, *PARITY, "trainer=cpu", *overrides), runs[name])
    return runs


def test_synced_ranks_match_one_process_on_the_global_batch(parity_runs):
    single, synced = train_losses(parity_runs["single"]), train_losses(parity_runs["synced"])
    assert len(single) == STEPS
    pd.testing.assert_series_equal(synced, single, rtol=1e-4, atol=1e-6)
    # the weights and the running statistics (what evaluation uses) agree as well
    state = {
        name: torch.load(
            parity_runs[name] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
        )["state_dict"]
        for name in ("single", "synced")
    }
    for key, value in state["single"].items():
        if value.is_floating_point():
            torch.testing.assert_close(state["synced"][key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_per_device_statistics_match_ghost_batches_not_the_synced_run(parity_runs):
    per_device = train_losses(parity_runs["per_device"])
    pd.testing.assert_series_equal(
        per_device, train_losses(parity_runs["ghost"]), rtol=1e-4, atol=1e-6
    )
    gap = (per_device - train_losses(parity_runs["synced"])).abs().max()
    assert gap > 1e-3, "per-device statistics should change the trajectory"


def test_rank_zero_alone_writes_the_run_folder(parity_runs):
    run_dir = parity_runs["synced"]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["steps"] == STEPS
    assert 0.0 <= result["test/acc"] <= 1.0  # trainer=ddp_cpu trains and tests (test_options)
    assert (result["world_size"], result["per_device_batch_size"], result["norm_sync"]) == (
        2,
        16,
        True,
    )
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 1
    assert sorted(p.name for p in run_dir.glob("*.csv")) == ["metrics.csv"]
    assert json.loads((parity_runs["single"] / "result.json").read_text())["world_size"] == 1


def test_multirun_with_ddp_cpu_runs_each_cell_once(parity_runs):
    log = parity_runs["sweep_log"]
    assert log.count("Launching 2 jobs") == 1  # no rank re-launched the sweep
    assert log.count("#0 :") == log.count("#1 :") == 1 and "#2 :" not in log
    cells = sweep_cells(parity_runs["sweep_root"])
    assert len(cells) == 2
    for cell in cells:
        assert json.loads((cell / "result.json").read_text())["status"] == "completed"
        assert list(train_losses(cell).index) == list(range(STEPS))  # every step's row, once
    # no stray single-run folder from a rank
    assert not (parity_runs["sweep_root"] / "outputs" / "runs").exists()


def test_rank_shares_partition_each_global_batch():
    x, y = torch.arange(48.0).unsqueeze(1), torch.arange(48)
    whole = ResidentBatches(x, y, 12, shuffle=True, drop_last=True, seed=3)
    ranks = [
        ResidentBatches(x, y, 12, shuffle=True, drop_last=True, seed=3, rank=r, world_size=3)
        for r in range(3)
    ]
    for epoch in (0, 1):
        for batches in (whole, *ranks):
            batches.set_epoch(epoch)
        for (_, batch), *shares in zip(whole, *ranks, strict=True):
            assert [len(share_y) for _, share_y in shares] == [4, 4, 4]
            torch.testing.assert_close(torch.cat([share_y for _, share_y in shares]), batch)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["trainer=ddp_cpu", "trainer.devices=3", "data.batch_size=32"], "data.batch_size=32"),
        (["trainer=ddp_cpu", "norm.ghost_batches=2"], "norm.sync=false"),
        (["trainer=ddp_cpu", "trainer.strategy=ddp_spawn"], "trainer.strategy=ddp_spawn"),
    ],
)
def test_impossible_multi_device_settings_are_config_errors(compose_cfg, overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose_cfg("data=synthetic", *overrides))


def test_ghost_batch_norm_normalizes_each_slice_alone():
    torch.manual_seed(0)
    x = torch.randn(8, 5) * 3 + 1
    ghost, plain = GhostBatchNorm1d(5, ghost_batches=2), nn.BatchNorm1d(5, affine=False)
    expected = torch.cat([plain(half) for half in x.chunk(2)])
    torch.testing.assert_close(ghost(x), expected)
    slice_means = torch.stack([half.mean(0) for half in x.chunk(2)]).mean(0)
    torch.testing.assert_close(ghost.running_mean, 0.1 * slice_means)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """The folder of what two spawned gloo ranks wrote (tests/rank_checks.py): one spawn, whose
    start-up is most of its cost, for every check."""
    from lightning_fabric.plugins.environments.lightning import find_free_network_port

    out = tmp_path_factory.mktemp("two_ranks")
    ports = [find_free_network_port()]
    while len(ports) < 2:
        ports += [port for port in [find_free_network_port()] if port not in ports]
    mp.spawn(run_rank_checks, args=(2, tuple(ports), str(out)), nprocs=2)
    return out


def test_sync_batch_norm_over_two_ranks_equals_one_process_on_the_whole_batch(two_ranks):
    ranks = [torch.load(two_ranks / f"rank{r}.pt") for r in range(2)]
    torch.manual_seed(0)
    x, target = torch.randn(8, 3) * 2 + 1, torch.randn(8, 3)
    x.requires_grad_()
    reference = nn.BatchNorm1d(3)
    out = reference(x)
    ((out - target) ** 2).mean().backward()
    torch.testing.assert_close(torch.cat([r["out"] for r in ranks]), out.detach())
    # the whole-batch mean loss is the average of the two shares' losses
    torch.testing.assert_close(torch.cat([r["x_grad"] for r in ranks]) / 2, x.grad)
    torch.testing.assert_close((ranks[0]["w_grad"] + ranks[1]["w_grad"]) / 2, reference.weight.grad)
    for rank in ranks:  # the running statistics agree across ranks and with one process
        assert torch.equal(rank["running_mean"], ranks[0]["running_mean"])
        assert torch.equal(rank["running_var"], ranks[0]["running_var"])
        torch.testing.assert_close(rank["running_mean"], reference.running_mean)
        torch.testing.assert_close(rank["running_var"], reference.running_var)
        assert rank["class"] == "BatchNorm1d"
    assert isinstance(convert_to_sync(nn.BatchNorm1d(3)), SyncBatchNorm1d)


PREEMPTIBLE = [
    "data=synthetic",
    "data.num_samples=20000",
    "trainer=ddp_cpu",
    "trainer.max_steps=600",
    "trainer.val_check_interval=100",
    "regularizer=[dropout]",
    "threads=1",
]


@pytest.mark.slow  # three 2-rank runs through the CLI: ~90 s on 2 cores
def test_sigterm_to_rank_zero_stops_every_rank_and_the_rerun_resumes_exactly(tmp_path):
    reference = tmp_path / "reference"
    normlab_train(*PREEMPTIBLE, f"hydra.run.dir={reference}", root=tmp_path)
    run_dir = tmp_path / "preempted"
    process = start_training(cli_environment(tmp_path), *PREEMPTIBLE, f"hydra.run.dir={run_dir}")
    wait_for_step(run_dir, 100, process)
    process.send_signal(signal.SIGTERM)  # rank 0 only, as `kill PID` does
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    assert json.loads((run_dir / "result.json").read_text())["status"] == "preempted"
    normlab_train(*PREEMPTIBLE, f"hydra.run.dir={run_dir}", root=tmp_path)
    result = json.loads((run_dir / "result.json").read_text())
    assert 100 <= result["resumed_from_step"] < 600
    # each rank's half of the logging window survives the checkpoint: identical train rows
    assert (run_dir / "metrics.csv").read_text() == (reference / "metrics.csv").read_text()
    # the checkpoint holds each rank's own streams (CPU only: the run's device)
    ranks = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)[
        "normlab_rank_rng"
    ]
    assert len(ranks) == 2 and not any("global_cuda" in rank for rank in ranks)
    assert not torch.equal(ranks[0]["members"]["cpu"][0], ranks[1]["members"]["cpu"][0])


def test_every_rank_restores_its_own_cpu_and_cuda_generators(two_ranks):
    world = 2
    ranks = [torch.load(two_ranks / f"streams{r}.pt", weights_only=False) for r in range(world)]
    checkpoint = ranks[0]["checkpoint"]  # what rank 0 writes
    assert len(checkpoint) == world
    for rank, seen in enumerate(ranks):
        assert torch.equal(checkpoint[rank]["global"], seen["saved_cpu"])
        assert torch.equal(checkpoint[rank]["members"]["cpu"][0], seen["saved_member"])
        assert torch.equal(checkpoint[rank]["global_cuda"], seen["saved_cuda"])
        assert torch.equal(seen["restored_cpu"], seen["saved_cpu"])
        assert torch.equal(seen["restored_member"], seen["saved_member"])
        [restored_cuda] = seen["restored_cuda"]
        assert torch.equal(restored_cuda, seen["saved_cuda"])
    assert not torch.equal(checkpoint[0]["global"], checkpoint[1]["global"])
    assert not torch.equal(checkpoint[0]["members"]["cpu"][0], checkpoint[1]["members"]["cpu"][0])
    assert not torch.equal(checkpoint[0]["global_cuda"], checkpoint[1]["global_cuda"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_solo_run_saves_and_restores_the_cuda_generator_on_a_gpu():
    randomness = MemberRandomness([7])
    torch.cuda.manual_seed(3)
    torch.rand(5, device="cuda")  # CUDA in use, its stream moved on
    saved = randomness.state_dict(torch.device("cuda"))
    assert saved["global_cuda"] is not None
    expected = torch.rand(5, device="cuda")
    torch.cuda.manual_seed(0)
    randomness.load_state_dict(saved)
    torch.testing.assert_close(torch.rand(5, device="cuda"), expected, rtol=0, atol=0)
