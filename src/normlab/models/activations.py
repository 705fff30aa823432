"""The `activation` group's options: one table, `ACTIVATIONS`, from an option's name to what it
is: its settings' schema, its module, and what the instruments measure on it.

An activation acts on each number on its own, so one module serves a whole stack (any shape,
any member count): a stack needs nothing more from it. Your own activation is an entry in a
module of yours, named by its YAML's `_target_` (docs/extending.md, "A new activation").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig
from torch import nn

from normlab.config.options import option_entry, option_settings
from normlab.config.schema import ActivationConfig, ELUConfig, LeakyReLUConfig


class IdentityActivation(nn.Identity):
    """`activation=identity`: no non-linearity, as a type of its own so that the instruments
    tell it from the other nn.Identity placeholders of a network (no norm, no pooling)."""


@dataclass(frozen=True)
class ActivationOption:
    """One option of the `activation` group."""

    config: type  # its settings' schema: a dataclass extending ActivationConfig
    module: type[nn.Module]  # its class: what the instruments look for in any network
    build: Callable[[Any], nn.Module]  # settings -> a new module
    # the values it saturates towards, where its gradient vanishes: the instruments measure
    # the share of outputs near them (sat/<layer>); None: it does not saturate
    asymptotes: tuple[float, float] | None = None
    # zero (or nearly) for negative inputs: the instruments measure dead units (dead/<layer>)
    rectified: bool = False


def _plain(module: type[nn.Module], **traits: Any) -> ActivationOption:
    return ActivationOption(ActivationConfig, module, lambda settings: module(), **traits)


ACTIVATIONS: dict[str, ActivationOption] = {
    "sigmoid": _plain(nn.Sigmoid, asymptotes=(0.0, 1.0)),
    "tanh": _plain(nn.Tanh, asymptotes=(-1.0, 1.0)),
    "relu": _plain(nn.ReLU, rectified=True),
    "leaky_relu": ActivationOption(
        LeakyReLUConfig, nn.LeakyReLU, lambda s: nn.LeakyReLU(s.negative_slope), rectified=True
    ),
    "elu": ActivationOption(ELUConfig, nn.ELU, lambda s: nn.ELU(s.alpha), rectified=True),
    "gelu": _plain(nn.GELU, rectified=True),
    "identity": _plain(IdentityActivation),
}


def activation_option(act_cfg: Any) -> ActivationOption:
    """The option `act_cfg` configures: its `_target_` (your own entry), else ACTIVATIONS[name]
    (`act_cfg` may also be a built-in option's name, or an option)."""
    if isinstance(act_cfg, ActivationOption):
        return act_cfg
    node = {"name": act_cfg} if isinstance(act_cfg, str) else act_cfg
    return option_entry("activation", node, ACTIVATIONS, ActivationOption)


def activation_settings(act_cfg: Any) -> DictConfig:
    """`act_cfg` typed and bounded by its option's schema (a built-in option's node already is)."""
    return option_settings("activation", act_cfg, activation_option(act_cfg).config)


def activation_types() -> tuple[type[nn.Module], ...]:
    """The module classes of every built-in option: what the instruments look for in a network
    when no option is named."""
    return tuple(option.module for option in ACTIVATIONS.values())


def activation_from_config(act_cfg: Any) -> nn.Module:
    """A new module of the non-linearity the `activation` group configures."""
    return activation_option(act_cfg).build(activation_settings(act_cfg))
