"""Early stopping per member, as tensor ops: Lightning's EarlyStopping rule for every member.

After each validation, a member that asks for early stopping (regularizer=early_stopping) and
still trains compares its monitored metric with its best: an improvement is
`current - min_delta > best` (mode max; `current + min_delta < best` for min) and resets its
wait, else the wait grows; `patience` validations without improvement, or a non-finite value,
stop it. The module then masks it (it takes no more steps and logs no more), as Lightning's
EarlyStopping would stop its solo run right there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

MONITORS = ("val/acc", "val/loss", "val/acc_best")  # what the module computes per member


class MemberEarlyStopping(nn.Module):
    """`rules[m]`: member m's early_stopping config (monitor, mode, patience, min_delta), or
    None: it trains to the end. The best values and waits are buffers (saved in checkpoints)."""

    def __init__(self, rules: Sequence[Any | None]):
        super().__init__()
        plain = [r for r in rules if r is not None]
        fill = plain[0] if plain else None

        def column(get, dtype=torch.float32):
            return torch.tensor([get(r if r is not None else fill) for r in rules], dtype=dtype)

        self.enabled = any(r is not None for r in rules)
        self.register_buffer("judged", torch.tensor([r is not None for r in rules]), False)
        if not self.enabled:
            return
        self.register_buffer("sign", column(lambda r: 1.0 if r.mode == "max" else -1.0), False)
        self.register_buffer("min_delta", column(lambda r: abs(r.min_delta)), False)
        self.register_buffer("patience", column(lambda r: r.patience, torch.int64), False)
        self.register_buffer(
            "monitor", column(lambda r: MONITORS.index(r.monitor), torch.int64), False
        )
        self.register_buffer("best", torch.full((len(rules),), -torch.inf))  # sign * metric
        self.register_buffer("wait", torch.zeros(len(rules), dtype=torch.int64))

    def forward(self, metrics: dict[str, torch.Tensor], active: torch.Tensor) -> torch.Tensor:
        """Judge one validation (`metrics`: each monitor, `[M]`); the members it stops, `[M]`."""
        if not self.enabled:
            return torch.zeros_like(active)
        values = torch.stack([metrics[name] for name in MONITORS]).to(self.best.dtype)
        current = values.gather(0, self.monitor.unsqueeze(0))[0]
        judged = self.judged & active
        finite = torch.isfinite(current)
        signed = self.sign * current
        improved = judged & finite & (signed - self.min_delta > self.best)
        waited = judged & finite & ~improved
        self.best.copy_(torch.where(improved, signed, self.best))
        self.wait.copy_(torch.where(improved, 0, self.wait + waited.long()))
        return judged & (~finite | (waited & (self.wait >= self.patience)))
