"""The GPU check's checks: each trains through normlab's public entry points and measures a
number against a reference (another device, the solo runs, a second run, an uninterrupted
run). A check returns what it measured, or raises `Mismatch` (FAIL) or `Skipped` (it cannot
run here, with the reason)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from normlab.gpu_check.runs import (
    Runner,
    SigtermAtStep,
    logged_losses,
    max_relative_difference,
    provenance,
)


class Mismatch(AssertionError):
    """A measured number outside its limit."""


class Skipped(Exception):
    """The check cannot run on this machine; the message says why."""


def require(ok: bool, message: str) -> None:
    """Raise Mismatch(`message`) unless `ok`."""
    if not ok:
        raise Mismatch(message)


# the real digits data (scikit-learn's, no download), the default 3x100 sigmoid MLP with BN
DIGITS = ["data=digits", "trainer.val_check_interval=100", "trainer.log_every_n_steps=10"]
# synthetic clusters with dropout: every member and run draws its own masks
SYNTHETIC_DROPOUT = [
    "data=synthetic",
    "regularizer=[dropout]",
    "trainer.val_check_interval=50",
    "trainer.log_every_n_steps=10",
]
CPU_VS_GPU_RTOL = 1e-3
# a stack member against its solo run: batched matmuls round in another order than one
# member's; on CPU (tests/test_stacked.py) 1e-5
STACKED_RTOL = {"cpu": 1e-5, "gpu": 1e-4}
# two ranks with all-reduced batch statistics against one device (gloo: 1e-7 in tests/test_ddp.py)
DDP_RTOL = {"cpu": 1e-5, "gpu": 1e-3}


def cpu_vs_gpu(runner: Runner) -> dict[str, Any]:
    """300 steps on the GPU follow 300 steps on the CPU: train/loss within 1e-3 relative."""
    if runner.device != "gpu":
        raise Skipped("compares a GPU run with a CPU run: needs a GPU")
    overrides = [*DIGITS, "trainer.max_steps=300"]
    cpu, cpu_dir = runner.train("cpu-vs-gpu/cpu", overrides, device="cpu")
    gpu, gpu_dir = runner.train("cpu-vs-gpu/gpu", overrides)
    device = provenance(gpu_dir)["device"]
    require(device.startswith("cuda"), f"the GPU run ran on {device}")
    difference = max_relative_difference(logged_losses(gpu_dir), logged_losses(cpu_dir))
    require(
        difference <= CPU_VS_GPU_RTOL,
        f"train/loss differs by {difference:.2e} relative (limit {CPU_VS_GPU_RTOL:.0e})",
    )
    return {
        "max_rel_diff": difference,
        "limit": CPU_VS_GPU_RTOL,
        "steps": gpu["steps"],
        "test_acc_cpu": cpu["test/acc"],
        "test_acc_gpu": gpu["test/acc"],
    }


def stacked_vs_solo(runner: Runner) -> dict[str, Any]:
    """Three members with dropout trained as one stack follow their solo runs step by step."""
    common = [*SYNTHETIC_DROPOUT, "trainer.max_steps=100"]
    members = [[*common, f"seed={seed}"] for seed in range(3)]
    limit = STACKED_RTOL[runner.device]
    differences = []
    for index, (stacked, stacked_dir) in enumerate(runner.train_stack("stacked", members)):
        solo, solo_dir = runner.train(f"solo{index}", members[index])
        require(stacked["status"] == solo["status"] == "completed", f"member {index}: {stacked}")
        stack = provenance(stacked_dir).get("stack") or {}
        require(stack.get("members") == len(members), f"member {index} trained in {stack}")
        differences.append(
            max_relative_difference(logged_losses(stacked_dir), logged_losses(solo_dir))
        )
    require(
        max(differences) <= limit,
        f"a member's train/loss differs from its solo run's by {max(differences):.2e} "
        f"relative (limit {limit:.0e})",
    )
    return {
        "members": len(members),
        "max_rel_diff": max(differences),
        "limit": limit,
        "device": provenance(stacked_dir)["device"],
    }


def deterministic(runner: Runner) -> dict[str, Any]:
    """trainer.deterministic=true with dropout twice: the same losses to the last bit."""
    overrides = [*SYNTHETIC_DROPOUT, "trainer.max_steps=100", "trainer.deterministic=true"]
    first, first_dir = runner.train("deterministic/a", overrides)
    second, second_dir = runner.train("deterministic/b", overrides)
    losses = logged_losses(first_dir)
    difference = max_relative_difference(logged_losses(second_dir), losses)
    require(len(losses) >= 10, f"{len(losses)} logged steps, 10 expected")
    require(difference == 0.0, f"train/loss differs by {difference:.2e} relative between runs")
    require(first["test/acc"] == second["test/acc"], f"test/acc {first} vs {second}")
    return {"logged_steps": len(losses), "max_rel_diff": difference, "limit": 0.0}


def sigterm_resume(runner: Runner) -> dict[str, Any]:
    """SIGTERM mid-run, then a re-run: it resumes into the uninterrupted run's metrics.csv."""
    overrides = [*SYNTHETIC_DROPOUT, "trainer.max_steps=300", "trainer.deterministic=true"]
    runner.train("sigterm-resume/reference", overrides)
    stopped, run_dir = runner.train("sigterm-resume/run", overrides, callbacks=[SigtermAtStep(120)])
    require(stopped["status"] == "preempted", f"not preempted: {stopped['status']}")
    resumed, _ = runner.train("sigterm-resume/run", overrides)
    require(
        resumed["resumed_from_step"] == stopped["steps"],
        f"resumed from {resumed['resumed_from_step']}, stopped at {stopped['steps']}",
    )
    reference = runner.work / "sigterm-resume" / "reference" / "metrics.csv"
    same = (run_dir / "metrics.csv").read_text() == reference.read_text()
    difference = max_relative_difference(logged_losses(run_dir), logged_losses(reference.parent))
    require(same, f"metrics.csv differs from the uninterrupted run's ({difference:.2e} relative)")
    return {"stopped_at": stopped["steps"], "max_rel_diff": difference, "limit": 0.0}


def ddp_parity(runner: Runner) -> dict[str, Any]:
    """Two ranks with synchronized batch norm follow one device on the same global batch."""
    from normlab.config.devices import visible_gpus

    if runner.device == "gpu" and visible_gpus() < 2:
        raise Skipped(f"two ranks need 2 GPUs, {visible_gpus()} here")
    overrides = [
        "data=synthetic",
        "trainer.max_steps=30",
        "trainer.val_check_interval=15",
        "trainer.log_every_n_steps=1",
        "norm.sync=true",
    ]
    _, one_dir = runner.train("ddp-parity/one", overrides)
    two, two_dir = runner.train("ddp-parity/two", overrides, device=f"ddp-{runner.device}")
    require(two.get("world_size") == 2, f"the two-rank run had world size {two.get('world_size')}")
    difference = max_relative_difference(logged_losses(two_dir), logged_losses(one_dir))
    limit = DDP_RTOL[runner.device]
    require(
        difference <= limit,
        f"train/loss differs by {difference:.2e} relative (limit {limit:.0e})",
    )
    return {"ranks": 2, "max_rel_diff": difference, "limit": limit}


# fp16 autocast against float32 on the same GPU: rounding, not a different run
MIXED_RTOL = 2e-2
SCALING_COUNTS = (1, 12, 48, 256, 1024)


def mixed_precision_stack(runner: Runner) -> dict[str, Any]:
    """16-mixed cells train solo (one loss scale for a stack would skip every member's step on
    one member's overflow): the launcher plans them solo, a stack of them is refused, a healthy
    16-mixed run follows its float32 run, and one at lr=50 fails on its own."""
    from normlab.config.errors import ConfigError
    from normlab.stack.plan import solo_reason

    if runner.device != "gpu":
        raise Skipped("16-mixed autocasts on CUDA: needs a GPU")
    healthy = [*DIGITS, "trainer.max_steps=200"]
    reason = solo_reason(runner.config([*healthy, "trainer.precision=16-mixed"]), runner.work)
    require(reason is not None and "16-mixed" in reason, f"planned into a stack ({reason})")
    try:
        runner.train_stack("mixed/stack", [[*healthy, "trainer.precision=16-mixed"]] * 2)
    except ConfigError:
        pass
    else:
        raise Mismatch("a 16-mixed stack of two trained; it must be refused")
    _, full_dir = runner.train("mixed/float32", healthy)
    _, mixed_dir = runner.train("mixed/16-mixed", [*healthy, "trainer.precision=16-mixed"])
    difference = max_relative_difference(logged_losses(mixed_dir), logged_losses(full_dir))
    require(difference <= MIXED_RTOL, f"16-mixed train/loss off by {difference:.2e} relative")
    wild, _ = runner.train(
        "mixed/lr50", [*healthy, "trainer.precision=16-mixed", "optimizer.lr=50"]
    )
    return {"max_rel_diff": difference, "limit": MIXED_RTOL, "lr50_status": wild["status"]}


def member_scaling(runner: Runner) -> dict[str, Any]:
    """Member-steps/s of the tiny MLP at M = 1, 12, 48, 256, 1024 on this device, against a
    plain vectorized step at 1,024 (normlab.bench.member_scaling): the member axis must scale
    (M = 1,024 at least 5x M = 1)."""
    from normlab.bench.member_scaling import TINY_MLP, normlab_rate, plain_rate, steps_for

    trainer = runner_trainer(runner)
    budget = 60_000 if runner.device == "gpu" else 6_000  # member-steps a run: seconds each
    rates = {
        members: normlab_rate([*TINY_MLP, *trainer], members, steps_for(members, budget))
        for members in SCALING_COUNTS
    }
    plain = plain_rate(SCALING_COUNTS[-1], steps_for(SCALING_COUNTS[-1], budget), runner.device)
    gain = rates[SCALING_COUNTS[-1]] / rates[1]
    require(gain >= 5, f"M=1024 runs only {gain:.1f}x the member-steps/s of M=1")
    return {
        "member_steps_per_s": rates,
        "plain_1024": plain,
        "normlab_vs_plain_1024": rates[SCALING_COUNTS[-1]] / plain,
        "gain_1_to_1024": gain,
    }


def runner_trainer(runner: Runner) -> list[str]:
    """The trainer overrides of the runner's device."""
    from normlab.gpu_check.runs import TRAINERS

    return TRAINERS[runner.device]


CHECKS: dict[str, Callable[[Runner], dict[str, Any]]] = {
    "cpu-vs-gpu": cpu_vs_gpu,
    "stacked-vs-solo": stacked_vs_solo,
    "deterministic": deterministic,
    "sigterm-resume": sigterm_resume,
    "ddp-2-sync-bn-parity": ddp_parity,
    "16-mixed-stack-lr50": mixed_precision_stack,
    "member-scaling": member_scaling,
}
