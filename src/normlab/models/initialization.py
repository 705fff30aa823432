"""Apply the `init` group's weight and bias initializers to every Linear and Conv layer."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Initializer = Callable[[torch.Tensor], torch.Tensor]


def initialize(
    model: nn.Module, weight_init: Initializer | None, bias_init: Initializer | None
) -> None:
    """Re-initialize weights and biases in place; None keeps PyTorch's default for that part.

    Norm layers keep gamma = 1 and beta = 0: initializing them like weights would change the
    function the norm computes, not just its starting point.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                if weight_init is not None:
                    weight_init(module.weight)
                if bias_init is not None and module.bias is not None:
                    bias_init(module.bias)
