"""Activation factory: config name -> module; families tell the instruments what to measure."""

from __future__ import annotations

from torch import nn

from normlab.config.schema import ActivationName

SATURATING = {"sigmoid", "tanh"}  # near-zero gradient far from the origin
RECTIFIED = {"relu", "leaky_relu", "elu", "gelu"}  # dead (always-negative) units possible


def build_activation(name: str, *, negative_slope: float = 0.01, alpha: float = 1.0) -> nn.Module:
    """The non-linearity called `name`."""
    kind = ActivationName(name)
    table = {
        ActivationName.sigmoid: nn.Sigmoid,
        ActivationName.tanh: nn.Tanh,
        ActivationName.relu: nn.ReLU,
        ActivationName.leaky_relu: lambda: nn.LeakyReLU(negative_slope),
        ActivationName.elu: lambda: nn.ELU(alpha),
        ActivationName.gelu: nn.GELU,
        ActivationName.identity: nn.Identity,
    }
    return table[kind]()


def activation_from_config(act_cfg) -> nn.Module:
    """`build_activation` with the arguments of the `activation` config group."""
    return build_activation(
        act_cfg.name, negative_slope=act_cfg.negative_slope, alpha=act_cfg.alpha
    )
