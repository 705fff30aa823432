"""Member-wise optimizers: every member's update in a few tensor ops, whatever M.

The members' parameters and gradients are the flat `[M, P]` tensors of MemberNetworks, and
each member's hyperparameters (its learning rate, momentum, betas, ...) are `[M]` tensors, so one
optimizer step of the whole stack is a fixed number of ops over those tensors: the gradients of
parameters a member lacks are masked, normlab's decoupled weight decay (regularizer=weight_decay)
and gradient clipping (regularizer=grad_clip, by norm or by value) act per member, then the
update of the member's optimizer, written out for the classes in ALGORITHMS so that it equals
`torch.optim`'s update for that member's settings. A member that no longer trains (diverged,
early-stopped: the module's `active` mask) takes no step.

Any other optimizer class (a user's own) updates through `torch.optim` itself, one instance
per member (PerMemberTorch): exact, but a Python loop per member, so the stacked launcher trains
such cells as stacks of one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch.optim import Optimizer

Factory = Callable[[list], Optimizer]  # a `_partial_` optimizer from the `optimizer` group


def member_defaults(factory: Factory) -> tuple[type[Optimizer], dict]:
    """The class and the complete settings (torch's defaults filled in) of one member's
    optimizer, from a throwaway instance."""
    probe = factory([torch.zeros(1, requires_grad=True)])
    return type(probe), dict(probe.defaults)


def _column(values: Sequence, like: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
    """Per-member values as an `[M, 1]` column (broadcasts over a member's row)."""
    return torch.tensor(list(values), dtype=dtype, device=like.device).unsqueeze(1)


class _Update:
    """One algorithm's member-wise update. `settings`: each member's torch defaults."""

    keys: tuple[str, ...] = ()

    def __init__(self, settings: list[dict], flat: torch.Tensor):
        self.any = {key: any(bool(s[key]) for s in settings) for key in self.keys}

    def state(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """The optimizer state this algorithm keeps, zeros like `flat`."""
        return {}

    def __call__(self, flat, grad, state, hyper, step: int, scale: torch.Tensor) -> None:
        """Update `flat` in place; `scale` `[M, 1]`: -lr for an active member, 0 otherwise."""
        raise NotImplementedError


class SGDUpdate(_Update):
    """torch.optim.SGD: weight decay, momentum (with dampening), Nesterov, maximize."""

    keys = ("weight_decay", "momentum", "nesterov", "maximize")

    def state(self, flat):
        return {"momentum_buffer": torch.zeros_like(flat)} if self.any["momentum"] else {}

    def __call__(self, flat, grad, state, hyper, step, scale):
        d_p = grad * hyper["sign"] if self.any["maximize"] else grad
        if self.any["weight_decay"]:
            d_p = d_p + hyper["weight_decay"] * flat
        if self.any["momentum"]:
            buffer, momentum = state["momentum_buffer"], hyper["momentum"]
            if step == 0:  # torch starts the buffer at the first gradient, undamped
                buffer.copy_(d_p)
            else:
                buffer.mul_(momentum).add_(d_p * hyper["undamped"])
            # a member without momentum steps along d_p: its buffer is exactly d_p (undamped)
            if self.any["nesterov"]:
                d_p = torch.where(hyper["nesterov"], d_p + momentum * buffer, buffer)
            else:
                d_p = buffer
        flat.addcmul_(d_p, scale)


class AdamUpdate(_Update):
    """torch.optim.Adam and AdamW (decoupled weight decay): amsgrad, maximize."""

    keys = ("weight_decay", "amsgrad", "maximize", "decoupled_weight_decay")

    def state(self, flat):
        state = {"exp_avg": torch.zeros_like(flat), "exp_avg_sq": torch.zeros_like(flat)}
        if self.any["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(flat)
        return state

    def __call__(self, flat, grad, state, hyper, step, scale):
        if self.any["maximize"]:
            grad = grad * hyper["sign"]
        if self.any["weight_decay"]:
            # AdamW: p <- p (1 - lr wd) first; Adam: wd p joins the gradient
            flat.mul_(1 + scale * hyper["decoupled_decay"])  # scale = -lr (0 when inactive)
            grad = grad + hyper["coupled_decay"] * flat
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, hyper["1-beta1"])
        exp_avg_sq.mul_(hyper["beta2"]).addcmul_(grad, grad * hyper["1-beta2"])
        count = step + 1
        # bias corrections in float64, as torch computes them from Python floats
        correction1 = 1 - hyper["beta1_64"] ** count
        correction2_sqrt = (1 - hyper["beta2_64"] ** count).sqrt()
        second = exp_avg_sq
        if self.any["amsgrad"]:
            peak = state["max_exp_avg_sq"]
            torch.where(hyper["amsgrad"], torch.maximum(peak, exp_avg_sq), peak, out=peak)
            second = torch.where(hyper["amsgrad"], peak, exp_avg_sq)
        denom = (second.sqrt() / correction2_sqrt.to(flat.dtype)).add_(hyper["eps"])
        flat.addcdiv_(exp_avg * (scale / correction1).to(flat.dtype), denom)


class RMSpropUpdate(_Update):
    """torch.optim.RMSprop: weight decay, centered, momentum, maximize."""

    keys = ("weight_decay", "centered", "momentum", "maximize")

    def state(self, flat):
        state = {"square_avg": torch.zeros_like(flat)}
        if self.any["momentum"]:
            state["momentum_buffer"] = torch.zeros_like(flat)
        if self.any["centered"]:
            state["grad_avg"] = torch.zeros_like(flat)
        return state

    def __call__(self, flat, grad, state, hyper, step, scale):
        if self.any["maximize"]:
            grad = grad * hyper["sign"]
        if self.any["weight_decay"]:
            grad = grad + hyper["weight_decay"] * flat
        square_avg = state["square_avg"]
        square_avg.mul_(hyper["alpha"]).addcmul_(grad, grad * hyper["1-alpha"])
        if self.any["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg.lerp_(grad, hyper["1-alpha"] * hyper["centered"])
            avg = square_avg.addcmul(grad_avg, grad_avg * hyper["centered"], value=-1).sqrt_()
        else:
            avg = square_avg.sqrt()
        avg.add_(hyper["eps"])
        if self.any["momentum"]:
            # a member without momentum: its buffer is exactly grad / avg
            buffer = state["momentum_buffer"]
            buffer.mul_(hyper["momentum"]).addcdiv_(grad, avg)
            flat.addcmul_(buffer, scale)
        else:
            flat.addcdiv_(grad * scale, avg)


# optimizer classes whose update is written out member-wise (exact class: a subclass may change it)
ALGORITHMS: dict[type[Optimizer], type[_Update]] = {
    torch.optim.SGD: SGDUpdate,
    torch.optim.Adam: AdamUpdate,
    torch.optim.AdamW: AdamUpdate,
    torch.optim.RMSprop: RMSpropUpdate,
}


def member_wise(optimizer_class: type) -> bool:
    """Whether `optimizer_class` has a member-wise update (else: one torch optimizer per member)."""
    return optimizer_class in ALGORITHMS


def _hyperparameters(settings: list[dict], flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every member's settings as `[M, 1]` columns in the parameters' dtype (and float64 where
    torch computes in Python floats)."""
    dtype = flat.dtype

    def column(key, default=0.0, as_type=dtype):
        return _column([s.get(key, default) for s in settings], flat, as_type)

    hyper = {
        "sign": column("maximize", False).mul(-2).add(1),  # -1 when maximizing
        "weight_decay": column("weight_decay"),
        "momentum": column("momentum"),
        "eps": column("eps", 1e-8),
        "alpha": column("alpha", 0.99),
    }
    momentum = [float(s.get("momentum", 0.0)) for s in settings]
    # a member without momentum steps along its gradient: no dampening for it
    undamped = [
        1.0 - float(s.get("dampening", 0.0)) if m else 1.0
        for s, m in zip(settings, momentum, strict=True)
    ]
    hyper["undamped"] = _column(undamped, flat, dtype)
    hyper["nesterov"] = column("nesterov", False, torch.bool)
    hyper["amsgrad"] = column("amsgrad", False, torch.bool)
    hyper["centered"] = column("centered", False)
    hyper["1-alpha"] = 1 - hyper["alpha"]
    betas = [s.get("betas", (0.9, 0.999)) for s in settings]
    hyper["beta1_64"] = _column([b[0] for b in betas], flat)
    hyper["beta2_64"] = _column([b[1] for b in betas], flat)
    hyper["1-beta1"] = (1 - hyper["beta1_64"]).to(dtype)
    hyper["beta2"] = hyper["beta2_64"].to(dtype)
    hyper["1-beta2"] = (1 - hyper["beta2_64"]).to(dtype)
    decoupled = [bool(s.get("decoupled_weight_decay", False)) for s in settings]
    decay = [float(s.get("weight_decay", 0.0)) for s in settings]
    hyper["decoupled_decay"] = _column(
        [d if c else 0.0 for d, c in zip(decay, decoupled, strict=True)], flat, dtype
    )
    hyper["coupled_decay"] = _column(
        [0.0 if c else d for d, c in zip(decay, decoupled, strict=True)], flat, dtype
    )
    return hyper


class MemberOptimizer(Optimizer):
    """One optimizer for every member of a MemberNetworks (see the module docstring).

    Its one parameter group holds the stacked leaves and the members' current learning rates as
    an `[M]` tensor under "lr" (member-wise schedules write it; LearningRateMonitor logs it, and
    each member's loggers get their own entry); the initial ones under "initial_lr".
    """

    def __init__(
        self,
        networks,
        factories: Sequence[Factory],
        *,
        active: Callable[[], torch.Tensor],
        decay_rate: torch.Tensor | None = None,
        clip_norm: torch.Tensor | None = None,
        clip_value: torch.Tensor | None = None,
    ):
        self.networks = networks
        classes, settings = zip(*(member_defaults(f) for f in factories), strict=True)
        if len(set(classes)) > 1:
            raise ValueError("the members of one stack share their optimizer class")
        self.algorithm_class = classes[0]
        flat = networks.flat
        leaves = [networks.leaf(name) for name in networks.slots]
        lr = torch.tensor(
            [float(s["lr"]) for s in settings], dtype=torch.float64, device=flat.device
        )
        super().__init__(leaves, {"lr": lr, "initial_lr": lr.clone()})
        self.settings = list(settings)
        self.active = active
        self.decay_rate, self.clip_norm, self.clip_value = decay_rate, clip_norm, clip_value
        update_class = ALGORITHMS.get(self.algorithm_class)
        if update_class is not None:
            self.update = update_class(self.settings, flat)
            self.hyper = _hyperparameters(self.settings, flat)
            self.state["members"] = self.update.state(flat)
            self.per_member = None
        else:
            self.update = None
            self.per_member = PerMemberTorch(networks, factories)
        self.steps_taken = 0

    @property
    def lr(self) -> torch.Tensor:
        """The members' current learning rates, `[M]` (float64)."""
        return self.param_groups[0]["lr"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero every member's gradient in place (the gradients stay views of the flat one)."""
        self.networks.zero_grad()

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every active member (see the module docstring for the order)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        networks = self.networks
        flat, grad = networks.flat, networks.flat_grad
        if networks.present is not None:
            grad.mul_(networks.present)
        active = self.active().unsqueeze(1)
        lr = self.lr.to(flat.dtype).unsqueeze(1)
        scale = torch.where(active, -lr, 0.0)  # -lr, or 0: an inactive member stays put
        if self.decay_rate is not None:
            flat.mul_(1 + scale * self.decay_rate)
        if self.clip_norm is not None:
            norms = torch.linalg.vector_norm(grad, dim=1, keepdim=True)
            grad.mul_((self.clip_norm / (norms + 1e-6)).clamp_(max=1.0))
        if self.clip_value is not None:
            grad.clamp_(min=-self.clip_value, max=self.clip_value)
        if self.update is not None:
            self.update(flat, grad, self.state["members"], self.hyper, self.steps_taken, scale)
        else:
            self.per_member.step(self.lr, active.squeeze(1))
        self.steps_taken += 1
        return loss

    def state_dict(self) -> dict:
        """The members' update state (buffers, steps taken) and learning rates."""
        state = {"steps_taken": self.steps_taken, "lr": self.lr.clone()}
        if self.update is not None:
            state["members"] = {key: value.clone() for key, value in self.state["members"].items()}
        else:
            state["per_member"] = self.per_member.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Continue from a checkpoint's `state_dict()`."""
        self.steps_taken = int(state_dict["steps_taken"])
        self.lr.copy_(state_dict["lr"])
        if self.update is not None:
            for key, value in state_dict["members"].items():
                self.state["members"][key].copy_(value)
        else:
            self.per_member.load_state_dict(state_dict["per_member"])


_NAMED: dict[type, type[MemberOptimizer]] = {}


def member_optimizer(networks, factories: Sequence[Factory], **settings) -> MemberOptimizer:
    """A MemberOptimizer whose class bears the members' optimizer class's name (`SGD`, `Adam`,
    ...), so that what reads optimizer names (LearningRateMonitor's `lr-SGD`) reads as in a
    plain run."""
    optimizer_class = member_defaults(factories[0])[0]
    named = _NAMED.get(optimizer_class)
    if named is None:
        named = type(optimizer_class.__name__, (MemberOptimizer,), {"__module__": __name__})
        named.__qualname__ = f"MemberOptimizer[{optimizer_class.__name__}]"
        _NAMED[optimizer_class] = named
    return named(networks, factories, **settings)


class PerMemberTorch:
    """One torch optimizer per member, over its network's parameters (views of the flat
    storage): any optimizer class, exactly; a Python loop per member (stacks of one)."""

    def __init__(self, networks, factories: Sequence[Factory]):
        self.optimizers = [
            factory(list(network.parameters()))
            for factory, network in zip(factories, networks.networks, strict=True)
        ]

    def step(self, lr: torch.Tensor, active: torch.Tensor) -> None:
        for optimizer, rate, on in zip(self.optimizers, lr.tolist(), active.tolist(), strict=True):
            if on:
                for group in optimizer.param_groups:
                    group["lr"] = rate
                optimizer.step()

    def state_dict(self) -> list[dict]:
        return [optimizer.state_dict() for optimizer in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        for optimizer, state in zip(self.optimizers, states, strict=True):
            optimizer.load_state_dict(state)


def clip_columns(grad_clips: Sequence[tuple[float, str] | None], like: torch.Tensor):
    """Per-member clipping thresholds as `[M, 1]` columns (`inf`: no clipping), by norm and by
    value; None for a kind no member uses."""
    by_norm = [clip[0] if clip and clip[1] == "norm" else math.inf for clip in grad_clips]
    by_value = [clip[0] if clip and clip[1] == "value" else math.inf for clip in grad_clips]
    norm = _column(by_norm, like, like.dtype) if any(map(math.isfinite, by_norm)) else None
    value = _column(by_value, like, like.dtype) if any(map(math.isfinite, by_value)) else None
    return norm, value
