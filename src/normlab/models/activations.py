"""Activation factory: config name -> module; families tell the instruments what to measure."""

from __future__ import annotations

from torch import nn

from normlab.config.schema import ActivationName

SATURATING = {"sigmoid", "tanh"}  # near-zero gradient far from the origin
RECTIFIED = {"relu", "leaky_relu", "elu", "gelu"}  # dead (always-negative) units possible


class IdentityActivation(nn.Identity):
    """`activation=identity`: no non-linearity, as a type of its own so that the instruments
    tell it from the other nn.Identity placeholders of a network (no norm, no pooling)."""


_TYPES = {
    ActivationName.sigmoid: nn.Sigmoid,
    ActivationName.tanh: nn.Tanh,
    ActivationName.relu: nn.ReLU,
    ActivationName.leaky_relu: nn.LeakyReLU,
    ActivationName.elu: nn.ELU,
    ActivationName.gelu: nn.GELU,
    ActivationName.identity: IdentityActivation,
}
ACTIVATION_TYPES = tuple(_TYPES.values())  # what the instruments look for in any network


def activation_type(name: str) -> type[nn.Module]:
    """The module class of the option `name` of the `activation` group."""
    return _TYPES[ActivationName(name)]


def build_activation(name: str, *, negative_slope: float = 0.01, alpha: float = 1.0) -> nn.Module:
    """The non-linearity called `name`."""
    kind = ActivationName(name)
    if kind is ActivationName.leaky_relu:
        return nn.LeakyReLU(negative_slope)
    if kind is ActivationName.elu:
        return nn.ELU(alpha)
    return _TYPES[kind]()


def activation_from_config(act_cfg) -> nn.Module:
    """`build_activation` with the arguments of the `activation` config group."""
    return build_activation(
        act_cfg.name, negative_slope=act_cfg.negative_slope, alpha=act_cfg.alpha
    )
