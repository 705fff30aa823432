"""On-device image augmentation of whole batches: random shifts and horizontal flips.

`RandomShiftFlip` is one run's augmentation; `MemberAugment` applies every member's to its own
batch (`[M, B, C, H, W]`), each drawing from its own stream exactly what its solo run draws (one
small op per member and draw), then shifting and flipping all members in one indexing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class RandomShiftFlip(nn.Module):
    """Shift each image by up to `max_shift` pixels (zero padding) and flip half of them."""

    def __init__(self, max_shift: int = 2, hflip: bool = True):
        super().__init__()
        self.max_shift, self.hflip = max_shift, hflip

    def draws(self, n: int, device, generator: torch.Generator | None = None):
        """The random choices for `n` images: row and column offsets in [0, 2 max_shift] (None
        without shifts) and which images flip (None without flips)."""
        dy = dx = flip = None
        if self.max_shift:
            k = self.max_shift
            dy = torch.randint(0, 2 * k + 1, (n, 1), device=device, generator=generator)
            dx = torch.randint(0, 2 * k + 1, (n, 1), device=device, generator=generator)
        if self.hflip:
            flip = torch.rand(n, device=device, generator=generator) < 0.5
        return dy, dx, flip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dy, dx, flip = self.draws(len(images), images.device)
        return MemberAugment.apply(images.unsqueeze(0), self.max_shift, dy, dx, flip)[0]


class MemberAugment:
    """Every member's augmentation (None: it has none) of its own batch, its own stream."""

    def __init__(self, augments: Sequence[RandomShiftFlip | None], randomness):
        self.augments, self.randomness = list(augments), randomness
        self.pad = max((a.max_shift for a in augments if a is not None), default=0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        members, batch = x.shape[:2]
        generators = self.randomness.generators(x.device)
        dy = torch.full((members, batch, 1), self.pad, device=x.device)
        dx = dy.clone()
        flip = torch.zeros(members, batch, dtype=torch.bool, device=x.device)
        for member, augment in enumerate(self.augments):
            if augment is None:
                continue
            rows, cols, flips = augment.draws(batch, x.device, generators[member])
            if rows is not None:  # centred in the widest member's padding
                dy[member] = rows + self.pad - augment.max_shift
                dx[member] = cols + self.pad - augment.max_shift
            if flips is not None:
                flip[member] = flips
        return self.apply(x, self.pad, dy, dx, flip)

    @staticmethod
    def apply(x, pad: int, dy, dx, flip) -> torch.Tensor:
        """Images `x` (`[M, B, C, H, W]`) shifted by offsets dy, dx (`[M, B, 1]`, into a
        zero padding of `pad`) and flipped where `flip` (`[M, B]`)."""
        members, batch, channels, height, width = x.shape
        if pad and dy is not None:
            images = x.reshape(members * batch, channels, height, width)
            padded = F.pad(images, (pad, pad, pad, pad))
            rows = (torch.arange(height, device=x.device) + dy.reshape(-1, 1))[:, None, :, None]
            cols = (torch.arange(width, device=x.device) + dx.reshape(-1, 1))[:, None, None, :]
            index = torch.arange(members * batch, device=x.device)[:, None, None, None]
            channel = torch.arange(channels, device=x.device)[None, :, None, None]
            x = padded[index, channel, rows, cols].reshape(x.shape)
        if flip is not None:
            x = torch.where(flip[:, :, None, None, None], x.flip(-1), x)
        return x
