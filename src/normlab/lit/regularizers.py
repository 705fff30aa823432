"""Which parameters the weight regularizers act on: the weight matrices of Linear and Conv layers.

L1 / L2 penalties (normlab.lit.losses) and decoupled weight decay (normlab.lit.optimizers) act
on weight matrices; biases and norm gains and shifts are left alone unless asked
(`regularizer.weight_decay.decay_norm_and_bias`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def weight_matrix_names(networks: Sequence[nn.Module]) -> list[str]:
    """The parameter names of every Linear / Conv weight in any of `networks`, in order."""
    names: dict[str, None] = {}
    for network in networks:
        for module_name, module in network.named_modules():
            if isinstance(module, _WEIGHT_LAYERS):
                names[f"{module_name}.weight" if module_name else "weight"] = None
    return list(names)
