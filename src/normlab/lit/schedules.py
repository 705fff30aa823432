"""Learning-rate schedules that torch.optim.lr_scheduler lacks, as LambdaLR factories.

These are what `scheduler.schedule._target_` names (conf/scheduler/*.yaml); a stack computes
them member-wise (normlab.lit.member_schedules). The factors are small classes rather than
lambdas so that LambdaLR can store them in checkpoints (it saves the state of callable objects,
not of functions).
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class InverseTimeFactor:
    """1 / (1 + decay_rate * t)."""

    def __init__(self, decay_rate: float):
        self.decay_rate = decay_rate

    def __call__(self, t: int) -> float:
        return 1.0 / (1.0 + self.decay_rate * t)


class InverseSqrtFactor:
    """k / sqrt(t + k^2): 1 at t = 0, then about k / sqrt(t)."""

    def __init__(self, k: float):
        self.k = k

    def __call__(self, t: int) -> float:
        return self.k / math.sqrt(t + self.k**2)


class WarmupCosineFactor:
    """Linear warmup to 1 over warmup_steps, then cosine decay to eta_min_factor at total_steps."""

    def __init__(self, warmup_steps: int, total_steps: int, eta_min_factor: float):
        self.warmup_steps, self.total_steps, self.eta_min_factor = (
            warmup_steps,
            total_steps,
            eta_min_factor,
        )

    def __call__(self, t: int) -> float:
        if t < self.warmup_steps:
            return (t + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (t - self.warmup_steps) / span)
        return self.eta_min_factor + (1 - self.eta_min_factor) * 0.5 * (
            1 + math.cos(math.pi * progress)
        )


def inverse_time(optimizer: Optimizer, decay_rate: float) -> LambdaLR:
    """lr = lr0 / (1 + decay_rate * t)."""
    return LambdaLR(optimizer, InverseTimeFactor(decay_rate))


def inverse_sqrt(optimizer: Optimizer, k: float = 1.0) -> LambdaLR:
    """lr = lr0 * k / sqrt(t + k^2)."""
    return LambdaLR(optimizer, InverseSqrtFactor(k))


def warmup_cosine(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, eta_min_factor: float = 0.0
) -> LambdaLR:
    """Linear warmup, then cosine annealing."""
    return LambdaLR(optimizer, WarmupCosineFactor(warmup_steps, total_steps, eta_min_factor))
