"""The training objective of every member at once: cross-entropy with label smoothing, and the
L2 / L1 weight penalties, each an `[M]` tensor from a fixed number of ops."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def member_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, smoothing: torch.Tensor | None = None
) -> torch.Tensor:
    """Each member's mean cross-entropy, `[M]`, from logits `[M, B, C]` and labels `[M, B]`;
    `smoothing` (`[M, 1]`, None: none) is each member's label smoothing, as
    `F.cross_entropy(label_smoothing=...)` computes it: (1 - e) nll + e mean_c(-log p_c)."""
    members, batch, classes = logits.shape
    if smoothing is None:
        nll = F.cross_entropy(logits.reshape(-1, classes), labels.reshape(-1), reduction="none")
        return nll.view(members, batch).mean(1)
    log_p = F.log_softmax(logits, dim=-1)
    nll = F.nll_loss(log_p.reshape(-1, classes), labels.reshape(-1), reduction="none")
    uniform = -log_p.mean(-1)
    return torch.lerp(nll.view(members, batch), uniform, smoothing).mean(1)


def member_penalty(
    weights: Sequence[torch.Tensor],
    l2: torch.Tensor | None,
    l1: torch.Tensor | None,
    batch_size: int,
) -> torch.Tensor:
    """(l2 / 2m) sum ||W||^2 + (l1 / m) sum |W| per member (`[M]`), over the stacked weight
    matrices `weights` (`[M, ...]` each); m is the (global) batch size; None: no member uses
    that penalty. Weights only: biases and norm gains are not penalized."""
    penalty = 0.0
    if l2 is not None:
        squares = torch.stack([w.pow(2).flatten(1).sum(1) for w in weights]).sum(0)
        penalty = l2 / (2 * batch_size) * squares
    if l1 is not None:
        absolutes = torch.stack([w.abs().flatten(1).sum(1) for w in weights]).sum(0)
        penalty = penalty + l1 / batch_size * absolutes
    return penalty
