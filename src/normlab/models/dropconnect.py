"""DropConnect (Wan et al. 2013): drop individual weights instead of activations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DropConnectLinear(nn.Linear):
    """A Linear layer whose weights are dropped with probability p at train time.

    Inverted scaling (kept weights divided by 1 - p) keeps the expected pre-activation
    unchanged, so evaluation uses the plain weights.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, p: float = 0.2):
        super().__init__(in_features, out_features, bias=bias)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return super().forward(x)
        keep = torch.rand_like(self.weight) >= self.p
        return F.linear(x, self.weight * keep / (1 - self.p), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"
