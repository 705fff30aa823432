"""Member-wise learning-rate schedules: every member's rate as one `[M]` tensor.

Each member counts its own schedule steps `t` (Lightning's rule for its automatic optimization:
a step-interval schedule steps after the optimizer steps whose 1-based index within the epoch is
a multiple of `frequency`, an epoch-interval one at the end of every `frequency`-th epoch), and
its learning rate is the closed form of its schedule at `t`. The schedules in CLOSED_FORMS are
computed for all members in a few ops, whatever M; any other `_target_` (a user's own scheduler)
keeps one torch scheduler object per member (PerMemberTorchSchedules): exact, a Python loop per
member, so the stacked launcher trains such cells as stacks of one.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import get_method, instantiate
from torch.optim import Optimizer

Tensor = torch.Tensor


def _cosine(t: Tensor, base: Tensor, T_max: Tensor, eta_min: Tensor) -> Tensor:
    return eta_min + (base - eta_min) * (1 + torch.cos(math.pi * t / T_max)) / 2


def _exponential(t: Tensor, base: Tensor, gamma: Tensor) -> Tensor:
    return base * gamma**t


def _step(t: Tensor, base: Tensor, step_size: Tensor, gamma: Tensor) -> Tensor:
    return base * gamma ** torch.div(t, step_size, rounding_mode="floor")


def _inverse_time(t: Tensor, base: Tensor, decay_rate: Tensor) -> Tensor:
    return base / (1 + decay_rate * t)


def _inverse_sqrt(t: Tensor, base: Tensor, k: Tensor) -> Tensor:
    return base * k / torch.sqrt(t + k**2)


def _warmup_cosine(
    t: Tensor, base: Tensor, warmup_steps: Tensor, total_steps: Tensor, eta_min_factor: Tensor
) -> Tensor:
    span = torch.clamp(total_steps - warmup_steps, min=1)
    progress = torch.clamp((t - warmup_steps) / span, max=1.0)
    decay = eta_min_factor + (1 - eta_min_factor) * 0.5 * (1 + torch.cos(math.pi * progress))
    return base * torch.where(t < warmup_steps, (t + 1) / warmup_steps, decay)


# `_target_` -> the schedule's learning rate at step t, member-wise (each argument an [M] tensor)
CLOSED_FORMS: dict[str, Callable[..., Tensor]] = {
    "torch.optim.lr_scheduler.CosineAnnealingLR": _cosine,
    "torch.optim.lr_scheduler.ExponentialLR": _exponential,
    "torch.optim.lr_scheduler.StepLR": _step,
    "normlab.lit.schedules.inverse_time": _inverse_time,
    "normlab.lit.schedules.inverse_sqrt": _inverse_sqrt,
    "normlab.lit.schedules.warmup_cosine": _warmup_cosine,
}


def closed_form(schedule: dict | None) -> bool:
    """Whether a member's `scheduler.schedule` (resolved; None: constant) is computed
    member-wise."""
    return schedule is None or schedule.get("_target_") in CLOSED_FORMS


@dataclass
class MemberSchedule:
    """One member's schedule: `scheduler.schedule` resolved (None: constant), its interval
    (`step` or `epoch`) and frequency."""

    schedule: dict | None
    interval: str = "epoch"
    frequency: int = 1


def _arguments(target: str, schedule: dict) -> dict[str, float]:
    """The schedule's numeric arguments, torch's defaults filled in (the optimizer left out)."""
    function = get_method(target)
    parameters = list(inspect.signature(function).parameters.values())[1:]  # after `optimizer`
    arguments = {}
    for parameter in parameters:
        if parameter.name in ("last_epoch", "verbose"):
            continue
        if parameter.name in schedule:
            arguments[parameter.name] = float(schedule[parameter.name])
        elif parameter.default is not inspect.Parameter.empty:
            arguments[parameter.name] = float(parameter.default)
    return arguments


class MemberSchedules:
    """The members' schedules, writing the learning rates into `lr` (the optimizer's `[M]`
    tensor) from the initial rates `base`."""

    def __init__(self, members: Sequence[MemberSchedule], lr: Tensor, base: Tensor):
        self.lr, self.base = lr, base
        device = lr.device
        self.steps = torch.zeros(len(members), dtype=torch.float64, device=device)
        self.by_step = torch.tensor([m.interval == "step" for m in members], device=device)
        self.frequency = torch.tensor([m.frequency for m in members], device=device)
        self.forms: list[tuple[Tensor, Callable, dict[str, Tensor]]] = []
        targets = {
            m.schedule["_target_"] for m in members if m.schedule and closed_form(m.schedule)
        }
        for target in sorted(targets):
            uses = torch.tensor(
                [bool(m.schedule) and m.schedule["_target_"] == target for m in members],
                device=device,
            )
            rows = [
                _arguments(target, m.schedule)
                if m.schedule and m.schedule["_target_"] == target
                else None
                for m in members
            ]
            like = next(r for r in rows if r is not None)
            arguments = {
                name: torch.tensor(
                    [r[name] if r is not None else like[name] for r in rows],
                    dtype=torch.float64,
                    device=device,
                )
                for name in like
            }
            self.forms.append((uses, CLOSED_FORMS[target], arguments))
        self.per_member = PerMemberTorchSchedules(members, base)
        self.active = bool(self.forms) or self.per_member.any
        self.refresh()

    def step(self, interval: str, count: int) -> None:
        """After the `count`-th step of the epoch (`interval` step) or at the end of the
        `count`-th epoch (`epoch`): advance the schedules due, set the new rates."""
        if not self.active:
            return
        of_interval = self.by_step if interval == "step" else ~self.by_step
        due = of_interval & (torch.remainder(count, self.frequency) == 0)
        self.steps += due
        self.per_member.step(due)
        self.refresh()

    def refresh(self) -> None:
        """Write every member's rate for its current step count into `lr`."""
        lr = self.base.clone()
        for uses, form, arguments in self.forms:
            lr = torch.where(uses, form(self.steps, self.base, **arguments), lr)
        lr = self.per_member.rates(lr)
        self.lr.copy_(lr)

    def state_dict(self) -> dict[str, Any]:
        """Each member's step count (and its own scheduler's state, for a user's scheduler)."""
        return {"steps": self.steps.clone(), "per_member": self.per_member.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue every schedule where the checkpoint left it."""
        self.steps.copy_(state["steps"])
        self.per_member.load_state_dict(state["per_member"])
        self.refresh()


class _OneGroup(Optimizer):
    """A bare one-group optimizer a torch scheduler can drive: it holds one member's rate."""

    def __init__(self, lr: float):  # Optimizer.__init__ would need parameters
        self.param_groups = [{"lr": lr, "initial_lr": lr, "params": []}]
        self.defaults = {"lr": lr}
        self.state = {}

    def step(self, closure=None) -> None:
        """The stack's optimizer does the update; a scheduler only checks this was called."""


class PerMemberTorchSchedules:
    """One torch scheduler object per member whose schedule has no closed form (a user's own)."""

    def __init__(self, members: Sequence[MemberSchedule], base: Tensor):
        self.schedules: dict[int, Any] = {}
        for index, member in enumerate(members):
            if member.schedule is not None and not closed_form(member.schedule):
                holder = _OneGroup(float(base[index]))
                self.schedules[index] = instantiate(member.schedule)(holder)
        self.any = bool(self.schedules)

    def step(self, due: Tensor) -> None:
        if not self.any:
            return
        flags = due.tolist()
        for index, schedule in self.schedules.items():
            if flags[index]:
                schedule.optimizer.step()
                schedule.step()

    def rates(self, lr: Tensor) -> Tensor:
        if not self.any:
            return lr
        lr = lr.clone()
        for index, schedule in self.schedules.items():
            lr[index] = schedule.optimizer.param_groups[0]["lr"]
        return lr

    def state_dict(self) -> dict[int, dict]:
        return {index: schedule.state_dict() for index, schedule in self.schedules.items()}

    def load_state_dict(self, state: dict[int, dict]) -> None:
        for index, saved in state.items():
            self.schedules[int(index)].load_state_dict(saved)
