"""The member-scaling case: member-steps/s of one process on one thread as M grows, against a
plain-PyTorch vectorized step of the same network at the largest M (normlab.bench.plain_members).

The tiny MLP (40-16-16-16-10 on MNIST-1D, batch 32, batch norm, ReLU, SGD with momentum, label
smoothing, clipping by norm) trains at M = 1, 16, 256 and 1,024 through the real pipeline
(`train_members`: every member its own folder, metrics.csv and logger). Both sides are timed in
their steady state, from the start of step WARMUP to the end of the last step (set-up, the first
steps and the final validation excluded). Repetitions interleave normlab and the reference
in this one process, so the ratio compares like with like. The 3x100 MLP of the ablation is
reported at M = 12, 48 and 256.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import Callback

from normlab.bench.cases import compose_config
from normlab.bench.plain_members import synchronize

TINY_MLP = [
    "data=mnist1d",
    "model.width=16",
    "data.batch_size=32",
    "norm=batch",
    "activation=relu",
    "optimizer=momentum",
    "regularizer=[label_smoothing,grad_clip]",
    "logger=csv",
    "threads=1",
    "callbacks.checkpoint=false",
    "trainer.val_check_interval=100000",
]
WIDE_MLP = [
    "logger=csv",
    "threads=1",
    "callbacks.checkpoint=false",
    "trainer.val_check_interval=100000",
]
TINY_COUNTS, WIDE_COUNTS = (1, 16, 256, 1024), (12, 48, 256)
WARMUP = 5  # steps left out of the timing (allocations, the first epoch's orders)


class StepTimer(Callback):
    """Seconds from the start of step WARMUP to the end of the last step."""

    def __init__(self):
        self.start, self.first, self.seconds, self.steps = None, 0, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == WARMUP:
            synchronize(pl_module.device)
            self.start, self.first = time.perf_counter(), trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.start is not None:
            synchronize(pl_module.device)
            self.seconds = time.perf_counter() - self.start
            self.steps = trainer.global_step - self.first


def steps_for(members: int, budget: int) -> int:
    """Steps for M members: about `budget` member-steps, 30 to 2,000 steps."""
    return max(30, min(2000, budget // members))


def normlab_rate(base: list[str], members: int, steps: int) -> float:
    """Member-steps/s of the real pipeline on `members` members of `base` (seeds 0..M-1)."""
    from normlab.pipeline import train_members

    lead = compose_config([*base, f"trainer.max_steps={steps + WARMUP}"])
    cfgs = []
    for seed in range(members):
        cfg = lead.copy()
        cfg.seed = seed
        cfgs.append(cfg)
    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="normlab-bench-") as folder:
        dirs = [Path(folder) / f"member{i}" for i in range(members)]
        train_members(cfgs, dirs, Path(folder) / "stack", extra_callbacks=[timer])
    return timer.steps * members / timer.seconds


def plain_rate(members: int, steps: int, device: str = "cpu") -> float:
    """Member-steps/s of the plain vectorized step of the tiny MLP on `device` (cpu, gpu)."""
    from normlab.bench.plain_members import plain_member_steps
    from normlab.data.datamodule import ResidentDataModule

    cfg = compose_config(TINY_MLP)
    datamodule = ResidentDataModule(cfg.data, Path(cfg.paths.data_dir), 0)
    datamodule.setup()
    x, y = datamodule.tensors["train"]
    if device == "gpu":
        x, y = x.cuda(), y.cuda()
    measured = plain_member_steps(
        x,
        y,
        members,
        (16, 16, 16),
        datamodule.num_classes,
        batch_size=32,
        steps=steps,
        warmup=WARMUP,
    )
    return measured["member_steps"] / measured["loop_s"]


def run_member_scaling(budget: int = 60_000, repeats: int = 3) -> dict[str, Any]:
    """Every measurement, `repeats` interleaved times; the medians."""
    torch.set_num_threads(1)
    largest = TINY_COUNTS[-1]
    runs: dict[str, list[float]] = {}
    for _ in range(repeats):
        for members in TINY_COUNTS:
            rate = normlab_rate(TINY_MLP, members, steps_for(members, budget))
            runs.setdefault(f"tiny/{members}", []).append(rate)
        rate = plain_rate(largest, steps_for(largest, budget))
        runs.setdefault(f"plain/{largest}", []).append(rate)
        for members in WIDE_COUNTS:
            rate = normlab_rate(WIDE_MLP, members, steps_for(members, budget // 4))
            runs.setdefault(f"wide/{members}", []).append(rate)
    medians = {key: statistics.median(values) for key, values in runs.items()}
    return {"runs": runs, "medians": medians, "budget": budget, "repeats": repeats}


def report(measured: dict[str, Any]) -> str:
    """The table, and a last line with the gain from M = 1 to the largest M."""
    medians = measured["medians"]
    largest = TINY_COUNTS[-1]
    plain = medians[f"plain/{largest}"]
    lines = [
        "| network | M | normlab member-steps/s | plain torch member-steps/s | normlab / plain |",
        "|---|---|---|---|---|",
    ]
    for members in TINY_COUNTS:
        rate = medians[f"tiny/{members}"]
        reference = f"{plain:,.0f}" if members == largest else ""
        ratio = f"{rate / plain:.2f}" if members == largest else ""
        row = f"| tiny MLP 40-16-16-16-10 | {members} | {rate:,.0f} | {reference} | {ratio} |"
        lines.append(row)
    for members in WIDE_COUNTS:
        rate = medians[f"wide/{members}"]
        lines.append(f"| 3x100 MLP, Fashion-MNIST | {members} | {rate:,.0f} | | |")
    first, last = medians[f"tiny/{TINY_COUNTS[0]}"], medians[f"tiny/{largest}"]
    lines += [
        "",
        f"member scaling: M={TINY_COUNTS[0]} {first:,.0f}, M={largest} {last:,.0f} "
        f"member-steps/s ({last / first:.1f}x)",
    ]
    return "\n".join(lines)


def main() -> None:
    """`python -m normlab.bench.member_scaling [--budget N] [--repeats R] [--out JSON]`."""
    parser = argparse.ArgumentParser(prog="python -m normlab.bench.member_scaling")
    parser.add_argument("--budget", type=int, default=60_000, help="member-steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    measured = run_member_scaling(args.budget, args.repeats)
    if args.out:
        args.out.write_text(json.dumps(measured, indent=2))
    print(report(measured), flush=True)


if __name__ == "__main__":
    main()
