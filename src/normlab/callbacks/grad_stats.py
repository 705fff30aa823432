"""Per-layer gradient norm, weight norm and update-to-weight ratio of the weight matrices."""

from __future__ import annotations

import torch
from torch import nn

from normlab.models.layers import weight_layers


def layer_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weight of every Linear and Conv layer by name (`layer1`, ..., `head` in normlab's
    networks)."""
    return {name: layer.weight for name, layer in weight_layers(model).items()}


def gradient_metrics(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`grad/<layer>/norm` (L2 norm of the gradient) and `grad/<layer>/weight_norm`."""
    metrics = {}
    for name, weight in weights.items():
        if weight.grad is not None:
            metrics[f"grad/{name}/norm"] = weight.grad.norm()
        metrics[f"grad/{name}/weight_norm"] = weight.detach().norm()
    return metrics


def snapshot(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies of the weights before an optimizer step (taken at recording steps only)."""
    return {name: weight.detach().clone() for name, weight in weights.items()}


def update_ratios(
    weights: dict[str, torch.Tensor], before: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """`grad/<layer>/update_ratio`: ||W_after - W_before|| / ||W_before|| (NaN when W_before = 0).

    Includes everything that moved the weights in that step: the optimizer and weight decay.
    """
    metrics = {}
    for name, weight in weights.items():
        old_norm = before[name].norm()
        ratio = (weight.detach() - before[name]).norm() / old_norm
        metrics[f"grad/{name}/update_ratio"] = torch.where(old_norm > 0, ratio, torch.nan)
    return metrics
