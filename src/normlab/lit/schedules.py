"""Learning-rate schedules that torch.optim.lr_scheduler lacks, as LambdaLR factories.

The factors are small classes rather than lambdas so that LambdaLR can store them in
checkpoints (it saves the state of callable objects, not of functions).
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


class MemberGroups(Optimizer):
    """One member's parameter groups of a stack's optimizer, seen as an optimizer of their own,
    so a member's learning-rate schedule (any torch LRScheduler) sets its groups only."""

    def __init__(self, groups: list[dict], optimizer: Optimizer):
        # Optimizer.__init__ would copy the groups; the schedule must set the stack optimizer's
        # own group dicts
        self.param_groups = groups
        self.defaults = optimizer.defaults
        self.state = optimizer.state

    def step(self, closure=None) -> None:
        """Say that the stack's optimizer has stepped these groups (it does the update); a
        schedule checks that its optimizer stepped before it does."""


class MemberSchedules:
    """Every member's schedule (None: a constant learning rate), saved and restored together:
    Lightning sees one scheduler of the stack's optimizer and checkpoints it."""

    def __init__(self, optimizer: Optimizer, schedules: list):
        self.optimizer = optimizer
        self.schedules = schedules

    def step(self, member: int) -> None:
        """Advance member `member`'s schedule by one interval (after an optimizer step)."""
        schedule = self.schedules[member]
        if schedule is not None:
            schedule.optimizer.step()
            schedule.step()

    def state_dict(self) -> dict:
        """Each member's schedule state."""
        return {"members": [s.state_dict() if s is not None else None for s in self.schedules]}

    def load_state_dict(self, state: dict) -> None:
        """Continue every member's schedule where the checkpoint left it."""
        for schedule, saved in zip(self.schedules, state["members"], strict=True):
            if schedule is not None:
                schedule.load_state_dict(saved)
