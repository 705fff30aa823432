"""Norm factory: one table from a config name to a layer, in 1-D (MLP) or 2-D (CNN) form."""

from __future__ import annotations

from torch import nn

from normlab.config.schema import NormName
from normlab.models.ghost_batchnorm import GhostBatchNorm1d, GhostBatchNorm2d
from normlab.models.noisy_batchnorm import NoisyBatchNorm1d, NoisyBatchNorm2d


def build_norm(
    name: str,
    num_features: int,
    *,
    spatial: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    affine: bool = True,
    num_groups: int = 1,
    ghost_batches: int = 1,
    noise: dict[str, float] | None = None,
) -> nn.Module:
    """A normalization layer over `num_features` features (channels when `spatial`); `noise`:
    noisy_batch's scale_mean, scale_std, shift_mean and shift_std (NoisyBatchNorm1d)."""
    kind = NormName(name)
    if kind is NormName.noisy_batch:
        layer = NoisyBatchNorm2d if spatial else NoisyBatchNorm1d
        return layer(num_features, eps=eps, momentum=momentum, affine=affine, **(noise or {}))
    if kind is NormName.batch:
        if ghost_batches > 1:
            ghost = GhostBatchNorm2d if spatial else GhostBatchNorm1d
            return ghost(
                num_features, eps=eps, momentum=momentum, affine=affine, ghost_batches=ghost_batches
            )
        layer = nn.BatchNorm2d if spatial else nn.BatchNorm1d
        return layer(num_features, eps=eps, momentum=momentum, affine=affine)
    if kind is NormName.layer:
        # On feature maps, layer norm is group norm with one group (statistics over C, H, W).
        if spatial:
            return nn.GroupNorm(1, num_features, eps=eps, affine=affine)
        return nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine)
    if kind is NormName.group:
        if num_features % num_groups:
            raise ValueError(
                f"norm.num_groups={num_groups} does not divide {num_features} features"
            )
        return nn.GroupNorm(num_groups, num_features, eps=eps, affine=affine)
    return nn.Identity()


def norm_from_config(norm_cfg, num_features: int, spatial: bool = False) -> nn.Module:
    """`build_norm` with the arguments of the `norm` config group."""
    return build_norm(
        norm_cfg.name,
        num_features,
        spatial=spatial,
        momentum=norm_cfg.momentum,
        eps=norm_cfg.eps,
        affine=norm_cfg.affine,
        num_groups=norm_cfg.num_groups,
        ghost_batches=norm_cfg.ghost_batches,
        noise={
            "scale_mean": norm_cfg.noise_scale_mean,
            "scale_std": norm_cfg.noise_scale_std,
            "shift_mean": norm_cfg.noise_shift_mean,
            "shift_std": norm_cfg.noise_shift_std,
        },
    )


def linear_needs_bias(norm_cfg) -> bool:
    """A bias before batch norm is cancelled by its mean subtraction (beta takes its role)."""
    if norm_cfg.linear_bias is not None:
        return bool(norm_cfg.linear_bias)
    before = norm_cfg.placement == "before_activation"
    batch_norms = (NormName.batch, NormName.noisy_batch)
    return not (NormName(norm_cfg.name) in batch_norms and before)
