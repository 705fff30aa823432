"""Save a checkpoint when the job is told to stop (SIGTERM: SLURM preemption, `kill`)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities.exceptions import SIGTERMException


class CheckpointOnPreemption(Callback):
    """Lightning turns SIGTERM into SIGTERMException after the current step; save then."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path)
