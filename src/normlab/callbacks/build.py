"""Callbacks a run needs, from the `callbacks` group (early stopping is the module's own,
member-wise: normlab.lit.early_stopping)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from normlab.callbacks.instruments import Instruments
from normlab.callbacks.landscape import Landscape
from normlab.callbacks.preemption import CheckpointOnPreemption
from normlab.callbacks.pruning import OptunaPruning, TrialLink
from normlab.config.extras import build_extras
from normlab.paths import last_checkpoint


def build_callbacks(cfg, run_dir: Path, members: Sequence | None = None) -> list[Callback]:
    """Checkpoint (last.ckpt at every validation), instruments and landscape probes when asked,
    Optuna pruning in a search trial, then the `callbacks.extra` entries (one set per run).

    `members`: the configs of the run's members (default: `cfg` alone); the instruments read
    each member's activation."""
    callbacks: list[Callback] = []
    if cfg.callbacks.checkpoint:
        callbacks.append(
            ModelCheckpoint(
                dirpath=str(run_dir / "checkpoints"),
                filename="last",
                save_top_k=1,
                monitor=None,
                enable_version_counter=False,
            )
        )
        callbacks.append(CheckpointOnPreemption(last_checkpoint(run_dir)))
    if cfg.callbacks.instruments is not None:
        activations = [member.activation for member in members or [cfg]]
        callbacks.append(Instruments(cfg.callbacks.instruments, activations))
    if cfg.callbacks.get("landscape") is not None:
        callbacks.append(Landscape(cfg.callbacks.landscape))
    trial = TrialLink.from_env()  # set by the normlab_optuna sweeper in a search trial's job
    if trial is not None:
        callbacks.append(OptunaPruning(trial))
    callbacks += build_extras(cfg.callbacks.get("extra"), "callbacks.extra")
    return callbacks
