"""The instruments callback: why normalization helps, measured on a fixed probe batch.

Every `every_n_steps` optimizer steps (steps 0, N, 2N, ...) it records, logged under that step:
before the update, the probe batch's pre-activations, saturation, dead units, unit symmetry and
batch-norm running-statistics gaps (model in eval mode, so the probe changes nothing); at the
update, per-layer gradient and weight norms and the update-to-weight ratio. At test time it
adds batch-norm and input-shift accuracies. Hooks exist only during a recording step's probe
pass, and nothing is synchronized with the host at other steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import nn

from normlab.callbacks.activation_stats import units_last
from normlab.callbacks.bn_diagnostics import test_time_metrics
from normlab.callbacks.grad_stats import gradient_metrics, layer_weights, snapshot, update_ratios
from normlab.callbacks.probe import capture_probe, histogram, probe_inputs, probe_metrics
from normlab.config.errors import ConfigError
from normlab.models.activations import activation_option


def member_networks(pl_module: pl.LightningModule) -> list[nn.Module]:
    """Each member's own network (views of its row of the stacked parameters)."""
    return pl_module.model.networks


def member_columns(per_member: Sequence[dict[str, Any]]) -> dict[str, list]:
    """One dict of metrics per member -> one list per metric name (None: that member has
    none), the form a run's loggers route to each member (normlab.utils.member_loggers)."""
    names = dict.fromkeys(name for metrics in per_member for name in metrics)
    return {name: [metrics.get(name) for metrics in per_member] for name in names}


def log_member_scalars(
    trainer: pl.Trainer, per_member: Sequence[dict], step: int, extra: Sequence[dict] = ()
) -> None:
    """Each member's scalar tensors (one host sync for all), and its `extra` values (objects
    such as W&B histograms), in one row per member to the run's loggers at `step`."""
    names = [(m, name) for m, metrics in enumerate(per_member) for name in metrics]
    if not names:
        return
    values = torch.stack([per_member[m][name].float() for m, name in names]).tolist()
    rows: list[dict[str, Any]] = [dict(more) for more in extra] or [{} for _ in per_member]
    for (member, name), value in zip(names, values, strict=True):
        rows[member][name] = value
    for logger in trainer.loggers:
        logger.log_metrics(member_columns(rows), step=step)


class Instruments(Callback):
    """Activation, gradient and batch-norm statistics every N steps (README: "Instruments"),
    for every member of a stack on its own network, logged under its own names."""

    def __init__(self, cfg: Any, activation: Any):
        self.every_n_steps, self.probe_size = cfg.every_n_steps, cfg.probe_size
        self.typical_unit, self.margin = cfg.typical_unit, cfg.saturation_margin
        self.histograms, self.shift = cfg.histograms, cfg.shift
        # each member's activation option (one for all: an option, its config or its name)
        several = isinstance(activation, (list, tuple))
        self.activations = [activation_option(a) for a in (activation if several else [activation])]
        self.probe: torch.Tensor | None = None
        self._step: int | None = None  # the step being recorded, from batch start to batch end
        self._metrics: list[dict[str, torch.Tensor]] = []  # per member
        self._hist: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = []  # per member
        self._before: list[dict[str, torch.Tensor]] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.datamodule is None:
            raise ConfigError("callbacks.instruments needs a datamodule for its probe batch")
        self.probe = probe_inputs(trainer.datamodule, self.probe_size).to(pl_module.device)
        narrowest = min(self._units(pl_module), default=None)
        if narrowest is not None and self.typical_unit >= narrowest:
            raise ConfigError(
                f"callbacks.instruments.typical_unit={self.typical_unit}: the narrowest hidden "
                f"layer has {narrowest} units; pick a smaller one"
            )
        if self.histograms and _has_wandb(trainer):
            import pandas  # noqa: F401  W&B imports it at its first histogram: pay that here

    def _units(self, pl_module: pl.LightningModule) -> list[int]:
        """The units (channels) of every recorded activation layer, from two probe examples."""
        units = []
        for member, model in enumerate(member_networks(pl_module)):
            captured = capture_probe(model, self.probe[:2], self.activations[member])
            units += [
                units_last(inputs).shape[1]
                for key, (inputs, _) in captured.items()
                if not key.startswith("norm:")
            ]
        return units

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps or self._step == step or not trainer.is_global_zero:
            return
        self._step = step
        histograms = self.histograms and _has_wandb(trainer)
        networks = member_networks(pl_module)
        self._metrics = [{} for _ in networks]
        self._hist = [{} for _ in networks]
        for member, (model, active) in enumerate(
            zip(networks, pl_module.active_list(), strict=True)
        ):
            if active:  # a stopped or diverged member records no more
                self._record_probe(member, model, histograms=histograms)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._step != trainer.global_step:
            return
        self._before = []
        networks = member_networks(pl_module)
        for member, (model, active) in enumerate(
            zip(networks, pl_module.active_list(), strict=True)
        ):
            if not active:
                self._before.append({})
                continue
            weights = layer_weights(model)
            self._metrics[member].update(gradient_metrics(weights))
            self._before.append(snapshot(weights))

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._step is None or trainer.global_step == self._step:  # no optimizer step yet
            return
        for member, (model, before) in enumerate(
            zip(member_networks(pl_module), self._before, strict=False)
        ):
            if not before:
                continue
            self._metrics[member].update(update_ratios(layer_weights(model), before))
        self._log(trainer, self._step)
        self._step, self._metrics, self._hist, self._before = None, [], [], []

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loader = trainer.test_dataloaders
        loader = loader[0] if isinstance(loader, (list, tuple)) else loader
        limit = trainer.num_test_batches[0]
        batches = list(islice(loader, int(limit) if limit != float("inf") else None))
        if not batches:
            return
        diverged = (pl_module.diverged_at >= 0).tolist()
        per_member = [
            {} if gone else test_time_metrics(model, batches, self.shift)
            for model, gone in zip(member_networks(pl_module), diverged, strict=True)
        ]
        names = dict.fromkeys(name for metrics in per_member for name in metrics)
        columns = {
            name: torch.stack(
                [m[name].float() if name in m else torch.tensor(float("nan")) for m in per_member]
            )
            for name in names
        }
        pl_module.log_members(columns, trainer.global_step, [not gone for gone in diverged])

    def _record_probe(self, member: int, model: nn.Module, *, histograms: bool) -> None:
        metrics, preactivations = probe_metrics(
            model,
            self.probe,
            activation=self.activations[member],
            typical_unit=self.typical_unit,
            margin=self.margin,
        )
        self._metrics[member].update(metrics)
        if histograms:
            self._hist[member].update(
                {f"act/{name}/hist": histogram(v) for name, v in preactivations.items()}
            )

    def _log(self, trainer: pl.Trainer, step: int) -> None:
        """One host sync for all scalars; the histograms reach the members' W&B runs only."""
        histograms = [_wandb_histograms(hist) for hist in self._hist] if any(self._hist) else ()
        log_member_scalars(trainer, self._metrics, step, histograms)


def _has_wandb(trainer: pl.Trainer) -> bool:
    return any(getattr(logger, "has_wandb", False) for logger in trainer.loggers)


def _wandb_histograms(hist: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    import wandb

    return {
        name: wandb.Histogram(np_histogram=(counts.cpu().numpy(), edges.cpu().numpy()))
        for name, (counts, edges) in hist.items()
    }
