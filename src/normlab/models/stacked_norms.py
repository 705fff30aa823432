"""Stacked forms of norm layers: one call that normalizes a run of members at once.

A norm option (normlab.models.norms.NORMS) names its stacked form, a function
`form(layer, rows) -> f` where `layer` is the first member's layer (settings: eps, groups, ...)
and `rows` are the run's members' rows of the stacked leaves and buffers (`NormRows`); `f` maps
the run's activations to their normalized values in the stack's layouts:

- features (MLP): `[M, F, B]`, feature-major per member;
- maps (CNN): `[B, M*C, H, W]`, channel-stacked.

Each member's result must equal its own layer's on its own slice: batch statistics over its
own examples only (with channel-stacked maps, batch and group norm statistics are exactly each
member's per-channel ones), its own gain and shift, its own running statistics updated in place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from normlab.models.sync_batchnorm import synced_batch_norm

if TYPE_CHECKING:
    from normlab.models.members import MemberNetworks

Normalize = Callable[[torch.Tensor], torch.Tensor]


class NormRows:
    """Members [start, end) of the stack's norm layer at `prefix`: their rows of its stacked
    gain, shift and buffers, the layout and the stack's mode."""

    def __init__(self, networks: MemberNetworks, prefix: str, start: int, end: int, maps: bool):
        self.networks, self.prefix, self.start, self.end = networks, prefix, start, end
        self.maps = maps  # channel-stacked maps `[B, M*C, H, W]`; else features `[M, F, B]`
        self.whole = start == 0 and end == len(networks)
        self._weight = self._leaf("weight")
        self._bias = self._leaf("bias")

    @property
    def members(self) -> int:
        return self.end - self.start

    @property
    def training(self) -> bool:
        """The stack's mode (the members' modules may have been replaced, e.g. synchronized)."""
        return self.networks.training

    @property
    def synchronized(self) -> bool:
        """Batch statistics span the DDP ranks (norm.sync under several processes)."""
        return self.networks.sync_batch_norm and _distributed()

    def _leaf(self, name: str) -> nn.Parameter | None:
        full = f"{self.prefix}.{name}"
        return self.networks.leaf(full) if self.networks.has_leaf(full) else None

    def _rows(self, leaf: torch.Tensor | None) -> torch.Tensor | None:
        if leaf is None:
            return None
        return leaf if self.whole else leaf[self.start : self.end]

    def weight(self) -> torch.Tensor | None:
        """The run's gains, `[members, F]` (None: no affine)."""
        return self._rows(self._weight)

    def bias(self) -> torch.Tensor | None:
        """The run's shifts, `[members, F]` (None: no affine)."""
        return self._rows(self._bias)

    def buffer(self, name: str) -> torch.Tensor:
        """The run's rows of the stacked buffer `name` (running_mean, ...), updated in place."""
        return self.networks.stacked_buffer(f"{self.prefix}.{name}")[self.start : self.end]


# (the first member's layer, the run's rows) -> the run's normalization
StackedForm = Callable[[nn.Module, "NormRows"], Normalize]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def affine(x: torch.Tensor, rows: NormRows) -> torch.Tensor:
    """`x` (`[M, B, F]`) scaled and shifted by each member's own gain and shift."""
    w = rows.weight()
    if w is None:
        return x
    return x * w.unsqueeze(1) + rows.bias().unsqueeze(1)


def identity(layer: nn.Module, rows: NormRows) -> Normalize:
    """norm=none."""
    return lambda x: x


def group_norm(layer: nn.GroupNorm, rows: NormRows) -> Normalize:
    """GroupNorm: on maps, the M*G groups of the channel-stacked batch are exactly each member's
    G groups; on features, groups of each example's features."""

    def normalize(x: torch.Tensor) -> torch.Tensor:
        if rows.maps:
            w, b = rows.weight(), rows.bias()
            w = w.flatten() if w is not None else None
            b = b.flatten() if b is not None else None
            return F.group_norm(x, rows.members * layer.num_groups, w, b, layer.eps)
        members, features, batch = x.shape
        flat = x.transpose(1, 2).reshape(members * batch, features)
        out = F.group_norm(flat, layer.num_groups, None, None, layer.eps)
        return affine(out.reshape(members, batch, features), rows).transpose(1, 2)

    return normalize


def layer_norm(layer: nn.Module, rows: NormRows) -> Normalize:
    """norm=layer: LayerNorm over each example's features; on maps it is GroupNorm(1, C)."""
    if isinstance(layer, nn.GroupNorm):
        return group_norm(layer, rows)
    if rows.maps:
        raise ValueError("a LayerNorm over feature maps has no stacked form")

    def normalize(x: torch.Tensor) -> torch.Tensor:
        out = F.layer_norm(x.transpose(1, 2), layer.normalized_shape, None, None, layer.eps)
        return affine(out, rows).transpose(1, 2)

    return normalize


def batch_norm(layer: nn.modules.batchnorm._BatchNorm, rows: NormRows) -> Normalize:
    """Batch norm of a run of members in one call: member m's feature f is channel m*F + f, so
    the statistics are exactly each member's own, and the running statistics (rows of the
    stacked buffers) are updated in place. Under DDP with `norm.sync`, statistics span the
    ranks."""
    tracked = layer.track_running_stats

    def normalize(x: torch.Tensor) -> torch.Tensor:
        training = rows.training
        mean = rows.buffer("running_mean").reshape(-1) if tracked else None  # views: rows
        var = rows.buffer("running_var").reshape(-1) if tracked else None  # are contiguous
        w, b = rows.weight(), rows.bias()
        w = w.reshape(-1) if w is not None else None
        b = b.reshape(-1) if b is not None else None
        shape = x.shape
        if not rows.maps:  # [M, F, B]: M*F channels of one batch
            x = x.reshape(1, shape[0] * shape[1], shape[2])
        if training and tracked:
            rows.buffer("num_batches_tracked").add_(1)
        if training and rows.synchronized:
            count = rows.buffer("num_batches_tracked")
            out = synced_batch_norm(x, mean, var, count, w, b, layer.momentum, layer.eps)
        else:
            use_batch = training or mean is None
            out = F.batch_norm(x, mean, var, w, b, use_batch, layer.momentum or 0.0, layer.eps)
        return out.reshape(shape)

    return normalize
