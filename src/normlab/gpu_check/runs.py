"""Runs the GPU check compares, through normlab's public entry points only
(`normlab.pipeline.train` / `train_members` on configs composed as the CLI composes them), and
the numbers it reads back from their run folders."""

from __future__ import annotations

import csv
import json
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from normlab.config.resolvers import register_resolvers
from normlab.config.schema import register_schemas
from normlab.paths import CONFIG_DIR

# a device and its trainer group; "ddp-gpu" / "ddp-cpu": two ranks over NCCL / gloo
TRAINERS = {
    "gpu": ["trainer=gpu"],
    "cpu": ["trainer=cpu"],
    "ddp-gpu": ["trainer=ddp", "trainer.devices=2"],
    "ddp-cpu": ["trainer=ddp_cpu", "trainer.devices=2"],
}


@dataclass
class Runner:
    """Composes and trains configs under `work`, on `device` ("gpu" or "cpu") by default."""

    work: Path
    device: str

    def config(self, overrides: Sequence[str], device: str | None = None) -> DictConfig:
        """The `train` config of `overrides` on `device`, its files under `work`."""
        register_schemas()
        register_resolvers()
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            return compose(
                "train",
                overrides=[
                    *TRAINERS[device or self.device],
                    f"paths.root_dir={self.work}",
                    f"paths.data_dir={self.work / 'data'}",
                    "logger=csv",
                    *overrides,
                ],
            )

    def train(
        self,
        run: str,
        overrides: Sequence[str],
        device: str | None = None,
        callbacks: Sequence[pl.Callback] = (),
    ) -> tuple[dict[str, Any], Path]:
        """One run (normlab.pipeline.train) in `work/run`: its result.json and its folder."""
        from normlab.pipeline import train

        run_dir = self.work / run
        return train(self.config(overrides, device), run_dir, callbacks), run_dir

    def train_stack(
        self, run: str, members: Sequence[Sequence[str]]
    ) -> list[tuple[dict[str, Any], Path]]:
        """The members' configs trained as one stack (normlab.pipeline.train_members)."""
        from normlab.pipeline import train_members

        run_dirs = [self.work / run / f"member{index}" for index in range(len(members))]
        results = train_members(
            [self.config(overrides) for overrides in members], run_dirs, self.work / run
        )
        return list(zip(results, run_dirs, strict=True))


def logged_losses(run_dir: Path) -> dict[int, float]:
    """train/loss by step, from a run folder's metrics.csv."""
    with open(run_dir / "metrics.csv", newline="") as handle:
        return {
            int(row["step"]): float(row["train/loss"])
            for row in csv.DictReader(handle)
            if row.get("train/loss")
        }


def max_relative_difference(measured: dict[int, float], reference: dict[int, float]) -> float:
    """The largest |measured - reference| / |reference| over the logged steps, which must be the
    same steps (a run that logged nothing compares as infinitely far)."""
    if not reference or measured.keys() != reference.keys():
        return float("inf")
    return max(abs(measured[s] - reference[s]) / max(abs(reference[s]), 1e-12) for s in reference)


def provenance(run_dir: Path) -> dict[str, Any]:
    """A run folder's provenance.json: its device ("cuda: <name> xN" or "cpu: ..."), its stack."""
    return json.loads((run_dir / "provenance.json").read_text())


class SigtermAtStep(pl.Callback):
    """Sends this process SIGTERM once training reaches `step`, as a scheduler preempting the
    job would; normlab then stops at a resume-safe step with a checkpoint."""

    def __init__(self, step: int):
        self.step, self.sent = step, False

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
