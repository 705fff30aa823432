"""The probe batch: a fixed slice of validation data, the hooks that read every activation and
batch norm of a network (found by type: normlab.models.layers) during one eval-mode pass, and
the per-layer metrics computed from what they saw."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from normlab.callbacks.activation_stats import histc_by_sort, layer_metrics, sorting_needed
from normlab.callbacks.bn_diagnostics import running_stat_gap
from normlab.models.layers import activation_layers, batch_norm_layers

HISTOGRAM_BINS = 64


def probe_inputs(datamodule: pl.LightningDataModule, size: int) -> torch.Tensor:
    """The first `size` validation inputs (fewer when the split is smaller)."""
    inputs, count = [], 0
    for x, _ in datamodule.val_dataloader():
        inputs.append(x)
        count += len(x)
        if count >= size:
            break
    return torch.cat(inputs)[:size]


@torch.no_grad()
def capture_probe(
    model: nn.Module, probe: torch.Tensor, activation: Any = None
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Input and output of every activation layer (key: its name; of the option `activation`
    only, or of any option) and batch norm (key: `norm:<name>`) on the probe batch, in eval
    mode. The hooks live for this pass only; a module called twice records its last call."""
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def capture(key: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            captured[key] = (args[0], output)

        return hook

    handles = [
        act.register_forward_hook(capture(name))
        for name, act in activation_layers(model, activation).items()
    ]
    handles += [
        norm.register_forward_hook(capture(f"norm:{name}"))
        for name, norm in batch_norm_layers(model).items()
    ]
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        model(probe)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return captured


@torch.no_grad()
def probe_metrics(
    model: nn.Module, probe: torch.Tensor, *, activation: Any, typical_unit: int, margin: float
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The probe batch's metrics of every layer of the `activation` option's type and every
    batch norm (still on the device), and the pre-activations by layer name."""
    metrics, preactivations = {}, {}
    norms = batch_norm_layers(model)
    for key, (inputs, output) in capture_probe(model, probe, activation).items():
        if key.startswith("norm:"):
            name = key.removeprefix("norm:")
            metrics.update(running_stat_gap(name, norms[name], inputs))
            continue
        preactivations[key] = inputs
        metrics.update(
            layer_metrics(
                key, inputs, output, activation=activation, typical_unit=typical_unit, margin=margin
            )
        )
    return metrics, preactivations


def histogram(
    values: torch.Tensor, *, by_sort: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(counts, bin edges) of `values` over their range, HISTOGRAM_BINS bins. `by_sort`: count
    through a sort (deterministic, same counts) instead of `torch.histc`; None: `sorting_needed`."""
    low, high = torch.stack([values.min(), values.max()]).float().tolist()
    high = max(high, low + 1e-6)  # a constant layer (zero init) still gets a valid range
    if by_sort is None:
        by_sort = sorting_needed(values)
    counts = (histc_by_sort if by_sort else torch.histc)(values.float(), HISTOGRAM_BINS, low, high)
    return counts, torch.linspace(low, high, HISTOGRAM_BINS + 1)
