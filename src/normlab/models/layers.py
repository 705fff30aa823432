"""Which layers of any network the instruments read, found by type, and the names they log.

A layer is named by its path in the network (`stage1.block1.act1`); a layer that is the only
one of its kind among its parent's children is named after the parent instead, so a normlab
hidden block `layer2` (transform, norm, act) logs `act/layer2/...`, `bn/layer2/...` and
`grad/layer2/...`. Layers directly under the network keep their own names (`head`, `input_norm`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from normlab.models.activations import activation_option, activation_types

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)  # the layers the `init` group initializes


def named_layers(model: nn.Module, is_kind: Callable[[nn.Module], bool]) -> dict[str, nn.Module]:
    """The layers of `model` for which `is_kind` holds, in module order, by logged name."""
    modules = dict(model.named_modules())
    layers = {}
    for path, module in modules.items():
        if not path or not is_kind(module):
            continue
        parent, _, _ = path.rpartition(".")
        siblings = modules[parent].children() if parent else ()
        alone = parent and sum(1 for child in siblings if is_kind(child)) == 1
        layers[parent if alone else path] = module
    return layers


def activation_layers(model: nn.Module, activation: Any = None) -> dict[str, nn.Module]:
    """The non-linearities of `model` by name: those of the `activation` option `activation`
    (an option, its config or a built-in's name), or (None) of every built-in option."""
    kinds = activation_types() if activation is None else activation_option(activation).module
    return named_layers(model, lambda module: isinstance(module, kinds))


def batch_norm_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The batch norms of `model` that keep running statistics, by name."""
    return named_layers(
        model, lambda module: isinstance(module, BATCH_NORMS) and module.track_running_stats
    )


def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The Linear and Conv layers of `model` by name (their weights are the instruments')."""
    return named_layers(model, lambda module: isinstance(module, WEIGHT_LAYERS))
