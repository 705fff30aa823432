"""The `norm` group's options: one table, `NORMS`, from an option's name to what it is.

An entry (`NormOption`) carries everything the rest of normlab asks about a norm: its settings'
schema, its layer in 1-D (`[B, F]`, an MLP) and 2-D (`[B, C, H, W]`, a CNN) form, whether it
normalizes with batch statistics, makes the bias before it redundant or draws random numbers,
and its stacked form (one call for many members; None: its cells train solo in a stack).

Your own norm is an entry in a module of yours, named by its YAML's `_target_`
(docs/extending.md, "A new norm"): `conf/norm/rms.yaml` holding `name: rms` and
`_target_: mypackage.norms.RMS_NORM` and its settings.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig
from torch import nn

from normlab.config.options import option_entry, option_settings
from normlab.config.schema import (
    BatchNormConfig,
    GroupNormConfig,
    LayerNormConfig,
    NoisyBatchNormConfig,
    NormConfig,
)
from normlab.models import stacked_norms
from normlab.models.ghost_batchnorm import GhostBatchNorm1d, GhostBatchNorm2d
from normlab.models.noisy_batchnorm import NoisyBatchNorm1d, NoisyBatchNorm2d

# (settings, num_features) -> a new layer
LayerFactory = Callable[[Any, int], nn.Module]


@dataclass(frozen=True)
class NormOption:
    """One option of the `norm` group."""

    config: type  # its settings' schema: a dataclass extending NormConfig
    layer_1d: LayerFactory  # over features `[B, F]`
    layer_2d: LayerFactory  # over channels of feature maps `[B, C, H, W]`
    # statistics over the batch: needs 2+ examples per device, spans the ranks under DDP with
    # norm.sync, and its running statistics are what eval mode uses
    batch_statistics: bool = False
    # subtracts each feature's mean, so a bias just before it is redundant (norm.linear_bias:
    # null drops it)
    cancels_bias: bool = False
    # draws random numbers while training (from the run's default generator): its cells train
    # solo in a stack, since a member's draws must come from its own stream
    draws: bool = False
    # one call for a run of members (normlab.models.stacked_norms); None: its cells train solo
    stacked: stacked_norms.StackedForm | None = None
    # a reason its settings leave it without a stacked form (or None)
    solo_when: Callable[[Any], str | None] | None = None

    def solo_reason(self, settings: Any) -> str | None:
        """Why a cell with these settings trains solo in a stack, or None."""
        name = settings.name
        if self.draws:
            return f"norm={name} draws random numbers from the run's own stream"
        if self.stacked is None:
            return f"norm={name} has no stacked form for several members"
        return self.solo_when(settings) if self.solo_when is not None else None


def _batch(settings: BatchNormConfig, features: int, spatial: bool) -> nn.Module:
    args = {"eps": settings.eps, "momentum": settings.momentum, "affine": settings.affine}
    if settings.ghost_batches > 1:
        ghost = GhostBatchNorm2d if spatial else GhostBatchNorm1d
        return ghost(features, ghost_batches=settings.ghost_batches, **args)
    return (nn.BatchNorm2d if spatial else nn.BatchNorm1d)(features, **args)


def _noisy_batch(settings: NoisyBatchNormConfig, features: int, spatial: bool) -> nn.Module:
    layer = NoisyBatchNorm2d if spatial else NoisyBatchNorm1d
    return layer(
        features,
        eps=settings.eps,
        momentum=settings.momentum,
        affine=settings.affine,
        scale_mean=settings.noise_scale_mean,
        scale_std=settings.noise_scale_std,
        shift_mean=settings.noise_shift_mean,
        shift_std=settings.noise_shift_std,
    )


def _layer_1d(settings: LayerNormConfig, features: int) -> nn.Module:
    return nn.LayerNorm(features, eps=settings.eps, elementwise_affine=settings.affine)


def _layer_2d(settings: LayerNormConfig, channels: int) -> nn.Module:
    # on feature maps, layer norm is group norm with one group (statistics over C, H, W)
    return nn.GroupNorm(1, channels, eps=settings.eps, affine=settings.affine)


def _group(settings: GroupNormConfig, features: int) -> nn.Module:
    if features % settings.num_groups:
        raise ValueError(
            f"norm.num_groups={settings.num_groups} does not divide {features} features"
        )
    return nn.GroupNorm(settings.num_groups, features, eps=settings.eps, affine=settings.affine)


def _ghosts_solo(settings: BatchNormConfig) -> str | None:
    if settings.ghost_batches > 1:
        return "norm.ghost_batches > 1 has no stacked form for several members"
    return None


NORMS: dict[str, NormOption] = {
    "batch": NormOption(
        config=BatchNormConfig,
        layer_1d=functools.partial(_batch, spatial=False),
        layer_2d=functools.partial(_batch, spatial=True),
        batch_statistics=True,
        cancels_bias=True,
        stacked=stacked_norms.batch_norm,
        solo_when=_ghosts_solo,
    ),
    "noisy_batch": NormOption(
        config=NoisyBatchNormConfig,
        layer_1d=functools.partial(_noisy_batch, spatial=False),
        layer_2d=functools.partial(_noisy_batch, spatial=True),
        batch_statistics=True,
        cancels_bias=True,
        draws=True,
    ),
    "layer": NormOption(
        config=LayerNormConfig,
        layer_1d=_layer_1d,
        layer_2d=_layer_2d,
        stacked=stacked_norms.layer_norm,
    ),
    "group": NormOption(
        config=GroupNormConfig,
        layer_1d=_group,
        layer_2d=_group,
        stacked=stacked_norms.group_norm,
    ),
    "none": NormOption(
        config=NormConfig,
        layer_1d=lambda settings, features: nn.Identity(),
        layer_2d=lambda settings, channels: nn.Identity(),
        stacked=stacked_norms.identity,
    ),
}


def norm_option(norm_cfg: Any) -> NormOption:
    """The option `norm_cfg` configures: its `_target_` (your own entry), else NORMS[name]."""
    return option_entry("norm", norm_cfg, NORMS, NormOption)


def norm_settings(norm_cfg: Any) -> DictConfig:
    """`norm_cfg` typed and bounded by its option's schema (a built-in option's node already is)."""
    return option_settings("norm", norm_cfg, norm_option(norm_cfg).config)


def build_norm(settings: Any, num_features: int, *, spatial: bool = False) -> nn.Module:
    """A new layer of the option `settings` configures over `num_features` features (channels
    when `spatial`). The layer carries its stacked form (`normlab_stacked_form`, None when its
    settings have none), so a stack's forward finds it."""
    option = norm_option(settings)
    settings = norm_settings(settings)
    layer = (option.layer_2d if spatial else option.layer_1d)(settings, num_features)
    solo = option.solo_reason(settings) is not None
    layer.normlab_stacked_form = None if solo else option.stacked
    return layer


def stacked_form(layer: nn.Module) -> stacked_norms.StackedForm | None:
    """The stacked form of a layer a norm option built, or of a plain BatchNorm1d/2d a network
    builds itself (an input norm); None: the layer has none."""
    if hasattr(layer, "normlab_stacked_form"):
        return layer.normlab_stacked_form
    if type(layer) in (nn.BatchNorm1d, nn.BatchNorm2d):
        return stacked_norms.batch_norm
    if type(layer) is nn.Identity:
        return stacked_norms.identity
    return None


def linear_needs_bias(norm_cfg: Any) -> bool:
    """Whether the linear or conv layer feeding a norm keeps its bias: `norm.linear_bias`, or
    (null) not when a norm that subtracts the mean follows it (its shift takes the bias's role)."""
    if norm_cfg.get("linear_bias") is not None:
        return bool(norm_cfg.linear_bias)
    before = norm_cfg.get("placement", "before_activation") == "before_activation"
    return not (norm_option(norm_cfg).cancels_bias and before)
