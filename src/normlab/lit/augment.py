"""On-device image augmentation of a whole batch: random shifts and horizontal flips."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RandomShiftFlip(nn.Module):
    """Shift each image by up to `max_shift` pixels (zero padding) and flip half of them."""

    def __init__(self, max_shift: int = 2, hflip: bool = True):
        super().__init__()
        self.max_shift, self.hflip = max_shift, hflip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, c, h, w = images.shape
        if self.max_shift:
            k = self.max_shift
            padded = F.pad(images, (k, k, k, k))
            dy = torch.randint(0, 2 * k + 1, (n, 1), device=images.device)
            dx = torch.randint(0, 2 * k + 1, (n, 1), device=images.device)
            rows = (torch.arange(h, device=images.device) + dy)[:, None, :, None]
            cols = (torch.arange(w, device=images.device) + dx)[:, None, None, :]
            batch = torch.arange(n, device=images.device)[:, None, None, None]
            channel = torch.arange(c, device=images.device)[None, :, None, None]
            images = padded[batch, channel, rows, cols]
        if self.hflip:
            flip = torch.rand(n, device=images.device) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        return images
