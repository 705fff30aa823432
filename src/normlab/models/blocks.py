"""The hidden block shared by the MLP and the CNN."""

from __future__ import annotations

import torch
from torch import nn


class HiddenBlock(nn.Module):
    """transform -> norm -> act (placement before_activation, the BatchNorm paper's) or
    transform -> act -> norm (after_activation), then optional pooling and dropout.

    The instruments read the input of `self.act`: the pre-activation the paper plots.
    """

    def __init__(
        self,
        transform: nn.Module,
        norm: nn.Module,
        act: nn.Module,
        *,
        norm_before_act: bool,
        dropout_p: float = 0.0,
        pool: nn.Module | None = None,
    ):
        super().__init__()
        self.transform, self.norm, self.act = transform, norm, act
        self.norm_before_act = norm_before_act
        self.pool = pool if pool is not None else nn.Identity()
        self.dropout = nn.Dropout(dropout_p) if dropout_p > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transform(x)
        x = self.act(self.norm(x)) if self.norm_before_act else self.norm(self.act(x))
        return self.dropout(self.pool(x))
