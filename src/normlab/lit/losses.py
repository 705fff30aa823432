"""The training criterion of every member at once: cross-entropy, an `[M]` tensor from a fixed
number of ops (the regularizers' terms are added by normlab.lit.regularizers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def member_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each member's mean cross-entropy, `[M]`, from logits `[M, B, C]` and labels `[M, B]`."""
    members, batch, classes = logits.shape
    nll = F.cross_entropy(logits.reshape(-1, classes), labels.reshape(-1), reduction="none")
    return nll.view(members, batch).mean(1)
