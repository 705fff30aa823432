"""Loss penalties (L2, L1) and the decay / no-decay parameter split."""

from __future__ import annotations

import torch
from torch import nn

_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def weight_matrices(model: nn.Module) -> list[torch.Tensor]:
    """The W of every Linear / Conv layer: what L1 / L2 penalties and weight decay act on."""
    return [m.weight for m in model.modules() if isinstance(m, _WEIGHT_LAYERS)]


def parameter_groups(
    model: nn.Module, weight_decay: float, decay_norm_and_bias: bool
) -> list[dict]:
    """Two optimizer groups: weight matrices (decayed) and biases / norm gains and shifts.

    Decaying biases and norm gamma/beta only shrinks the scale and offset the network
    learned, without regularizing the function's complexity, so by default they are not decayed.
    The rate is stored as `decoupled_weight_decay` and applied by `apply_decoupled_decay`.
    """
    weights = {id(w) for w in weight_matrices(model)}
    decayed, kept = [], []
    for parameter in model.parameters():
        (decayed if id(parameter) in weights or decay_norm_and_bias else kept).append(parameter)
    groups = [
        {"params": decayed, "decoupled_weight_decay": weight_decay},
        {"params": kept, "decoupled_weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


@torch.no_grad()
def apply_decoupled_decay(optimizer: torch.optim.Optimizer) -> None:
    """w <- w - lr * rate * w (Loshchilov & Hutter), independent of the gradient's scaling."""
    for group in optimizer.param_groups:
        rate = group.get("decoupled_weight_decay", 0.0)
        if rate:
            torch._foreach_mul_(group["params"], 1.0 - group["lr"] * rate)


class WeightPenalty(nn.Module):
    """(l2 / 2m) * sum ||W||^2 + (l1 / m) * sum |W|, with m the batch size."""

    def __init__(self, l2: float = 0.0, l1: float = 0.0):
        super().__init__()
        self.l2, self.l1 = l2, l1

    @property
    def active(self) -> bool:
        return bool(self.l2 or self.l1)

    def forward(self, weights: list[torch.Tensor], batch_size: int) -> torch.Tensor:
        penalty = weights[0].new_zeros(())
        if self.l2:
            penalty = penalty + self.l2 / (2 * batch_size) * sum(w.pow(2).sum() for w in weights)
        if self.l1:
            penalty = penalty + self.l1 / batch_size * sum(w.abs().sum() for w in weights)
        return penalty
