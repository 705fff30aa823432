"""The benchmarked cases. Each trains the same config (model, data, batch order, optimizer,
steps, validation cadence) and returns a LoopMeter measurement; `run_case` picks one."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from normlab.config.resolvers import register_resolvers
from normlab.config.schema import register_schemas
from normlab.paths import CONFIG_DIR

LABELS = {
    "raw": "(a) raw PyTorch loop",
    "normlab": "(b) normlab default: CSV + W&B offline",
    "instruments": "(c) normlab + instruments",
    "template": "(d) template: DataLoader, per-step log",
    "floor": "(e) bare Lightning module, no logging",
    "solo_1t": "(g) normlab solo, CSV, 1 thread",
    "solo_cores": "(h) normlab solo, CSV, all cores' threads",
    "raw_1t": "(i) raw PyTorch loop, 1 thread: one core's limit",
    "stacked": "(j) stacked, 12 members, a process per core (member-steps/s)",
    "stacked48": "(k) stacked, 48 members, 1 process, 1 thread (member-steps/s)",
    "landscape": "(l) normlab + landscape probes (ICS, L(w - eta g))",
}
STACKED = 12  # the main ablation's cells: 2 activations x 2 norms x 3 seeds
STACKED_MEMORY = 48  # the memory bound: this stack within 2x a solo run's peak RSS
# what the normlab cases add to the shared overrides: the real pipeline with these groups
NORMLAB_OVERRIDES = {
    "normlab": ["logger=wandb"],
    "instruments": ["logger=wandb", "callbacks=instruments"],
    # Santurkar's measures at their default cadence (every 100 steps, 500 probe examples)
    "landscape": ["logger=wandb", "callbacks=landscape"],
    # the thread policy, decided by measurement: one small model on 1 thread vs all cores
    "solo_1t": ["threads=1"],
    "solo_cores": [],  # threads: the policy's default, all cores for one job
}


def member_overrides(count: int) -> list[list[str]]:
    """The ablation's kinds of cell (activation x norm) over seeds, `count` cells, sorted by
    kind as the stacked launcher sorts a stack's members."""
    kinds = [(act, norm) for act in ("relu", "sigmoid") for norm in ("batch", "none")]
    cells = [(kinds[i % 4], i // 4) for i in range(count)]
    return [
        [f"activation={act}", f"norm={norm}", f"seed={seed}"] for (act, norm), seed in sorted(cells)
    ]


def compose_config(overrides: list[str]) -> DictConfig:
    """normlab's `train` config with `overrides`, composed as the CLI would."""
    register_schemas()
    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def train_normlab(cfg: DictConfig) -> dict[str, Any]:
    """The real `normlab.pipeline.train` in a throw-away run folder, timed by a LoopTimer."""
    from normlab.bench.timer import LoopTimer
    from normlab.pipeline import train

    timer = LoopTimer()
    with tempfile.TemporaryDirectory(prefix="normlab-bench-") as run_dir:
        result = train(cfg, Path(run_dir) / "run", extra_callbacks=[timer])
    if result["status"] != "completed":
        raise RuntimeError(f"benchmark run {result['status']}: {result.get('error')}")
    return timer.meter.measured


def train_stack(cfgs: list[DictConfig]) -> dict[str, Any]:
    """The real `normlab.pipeline.train_members` on `cfgs`, timed by a LoopTimer; `steps`
    counts member-steps (optimizer steps x members)."""
    from normlab.bench.timer import LoopTimer
    from normlab.pipeline import train_members

    timer = LoopTimer()
    with tempfile.TemporaryDirectory(prefix="normlab-bench-") as folder:
        dirs = [Path(folder) / f"member{i}" for i in range(len(cfgs))]
        results = train_members(cfgs, dirs, Path(folder) / "stack", extra_callbacks=[timer])
    failed = [r for r in results if r["status"] != "completed"]
    if failed:
        raise RuntimeError(f"benchmark stack member {failed[0]['status']}: {failed[0]}")
    measured = timer.meter.measured
    measured["steps"] *= len(cfgs)
    return measured


def run_case(
    case: str, steps: int, threads: int | None, part: tuple[int, int] = (0, 1)
) -> dict[str, Any]:
    """Train `case` for `steps` steps; its measurement (loop seconds, steps, memory, val acc).
    `part`: (p, P), the p-th of P processes that share a stacked case's members."""
    overrides = [f"trainer.max_steps={steps}", *NORMLAB_OVERRIDES.get(case, [])]
    if case == "raw_1t":
        case, threads = "raw", 1
    if case.startswith("stacked"):
        index, parts = part
        count = STACKED if case == "stacked" else STACKED_MEMORY
        members = member_overrides(count)
        share = -(-len(members) // parts)
        mine = members[index * share : (index + 1) * share]
        return train_stack([compose_config([*overrides, "threads=1", *m]) for m in mine])
    if threads is not None:
        overrides.append(f"threads={threads}")
    cfg = compose_config(overrides)
    if case in NORMLAB_OVERRIDES:
        return train_normlab(cfg)
    if case == "raw":
        from normlab.bench.raw import train_raw

        return train_raw(cfg)
    if case == "template":
        from normlab.bench.template import train_template

        return train_template(cfg)
    if case == "floor":
        from normlab.bench.floor import train_floor

        return train_floor(cfg)
    raise ValueError(f"unknown benchmark case {case!r}; choose from {list(LABELS)}")
