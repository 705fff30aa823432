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
    "one_step": "(f) normlab default, steps_per_call=1",
}
# what the normlab cases add to the shared overrides: the real pipeline with these groups
NORMLAB_OVERRIDES = {
    "normlab": ["logger=wandb"],
    "instruments": ["logger=wandb", "callbacks=instruments"],
    # (b) with one optimizer step per Lightning batch: what the step chunks are worth
    "one_step": ["logger=wandb", "steps_per_call=1"],
}


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


def run_case(case: str, steps: int, threads: int | None) -> dict[str, Any]:
    """Train `case` for `steps` steps; its measurement (loop seconds, steps, memory, val acc)."""
    overrides = [f"trainer.max_steps={steps}", *NORMLAB_OVERRIDES.get(case, [])]
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
