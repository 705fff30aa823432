"""The `regularizer` group's options: one table, `REGULARIZERS`, from an option's name to its
`Regularizer` class, and the protocol every regularizer follows.

A run trains M members (a solo run: M = 1), each with its own regularizer settings. A
regularizer is built once per run from every member's settings (`None` for a member that does
not use it) and acts on all members at once, its member-wise parameters as `[M]` tensors
(`column`). Where it acts (`acts_on`) decides which of its methods ClassifierModule calls:

- `forward`: the network's own argument `network_argument` (dropout, dropconnect), given when
  it is built; built-in only, since the network implements it;
- `batch`: `batch(x) -> x` on the training batch `[M, B, ...]`, before the forward;
- `loss`: `loss(module, logits, y) -> [M]`, added to each member's loss after the forward;
- `gradients`: `gradients(module)`, in place on the flat gradient `module.model.flat_grad`
  (`[M, P]`), after the backward and before the optimizer step (and its hooks);
- `weights`: `weights(module)`, in place on the flat weights `module.model.flat` (`[M, P]`),
  after the optimizer step;
- `optimizer`: `optimizer_arguments(module) -> dict` for MemberOptimizer (decay, clipping),
  which acts inside its step, after the `on_before_optimizer_step` hooks;
- `validation`: `validation(metrics, active) -> [M] bool`, the members it stops, after each
  validation.

Your own regularizer is a `Regularizer` subclass in a module of yours, named by a YAML file's
`regularizer.extra.<name>._target_` (docs/extending.md, "A new regularizer").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from normlab.config.errors import ConfigError
from normlab.config.options import typed_settings
from normlab.config.schema import (
    AugmentConfig,
    DropConnectConfig,
    DropoutConfig,
    EarlyStoppingConfig,
    GradClipConfig,
    L1Config,
    L2Config,
    LabelSmoothingConfig,
    WeightDecayConfig,
)
from normlab.config.targets import import_target
from normlab.lit.augment import MemberAugment, RandomShiftFlip
from normlab.lit.early_stopping import MemberEarlyStopping

if TYPE_CHECKING:
    from normlab.lit.module import ClassifierModule
    from normlab.models.members import MemberNetworks

PLACES = ("forward", "batch", "loss", "gradients", "weights", "optimizer", "validation")
_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def weight_matrix_names(networks: Sequence[nn.Module]) -> list[str]:
    """The parameter names of every Linear / Conv weight in any of `networks`, in order: what
    the weight penalties and decay act on (biases and norm gains and shifts are left alone
    unless asked, `regularizer.weight_decay.decay_norm_and_bias`)."""
    names: dict[str, None] = {}
    for network in networks:
        for module_name, module in network.named_modules():
            if isinstance(module, _WEIGHT_LAYERS):
                names[f"{module_name}.weight" if module_name else "weight"] = None
    return list(names)


class Regularizer(nn.Module):
    """One regularizer over the members of a run (see the module docstring). A subclass sets
    `config` (its settings' dataclass) and `acts_on` (one of PLACES), implements that place's
    method, and names in `member_wise` the settings it reads per member: each becomes an `[M]`
    float buffer of that name (0 for a member without this regularizer), moved with the module
    to its device. Buffers it registers itself are saved in checkpoints."""

    config: ClassVar[type]
    acts_on: ClassVar[str]
    member_wise: ClassVar[tuple[str, ...]] = ()
    network_argument: ClassVar[str | None] = None  # acts_on "forward": the network's argument

    def __init__(self, settings: Sequence[Any | None], networks: MemberNetworks):
        super().__init__()
        self.settings = list(settings)  # member m's settings; None: m does not use it
        for key in self.member_wise:
            values = [float(s[key]) if s is not None else 0.0 for s in self.settings]
            self.register_buffer(key, torch.tensor(values), persistent=False)
        self.register_buffer("used", torch.tensor([s is not None for s in settings]), False)

    @staticmethod
    def weight_matrices(module: ClassifierModule) -> list[torch.Tensor]:
        """Every Linear / Conv weight as a stacked `[M, ...]` leaf (views of the flat storage)."""
        return [module.model.leaf(name) for name in module.weight_names]

    # the places' methods (a subclass implements its own)
    def batch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, module: ClassifierModule, logits: torch.Tensor, y: torch.Tensor):
        raise NotImplementedError

    def gradients(self, module: ClassifierModule) -> None:
        raise NotImplementedError

    def weights(self, module: ClassifierModule) -> None:
        raise NotImplementedError

    def optimizer_arguments(self, module: ClassifierModule) -> dict[str, Any]:
        raise NotImplementedError

    def validation(self, metrics: dict[str, torch.Tensor], active: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class L2Penalty(Regularizer):
    """(strength / 2m) sum ||W||^2 over the weight matrices; m: the (global) batch size."""

    config = L2Config
    acts_on = "loss"
    member_wise = ("strength",)

    def loss(self, module: ClassifierModule, logits: torch.Tensor, y: torch.Tensor):
        squares = torch.stack([w.pow(2).flatten(1).sum(1) for w in self.weight_matrices(module)])
        return self.strength / (2 * module.global_batch_size(y)) * squares.sum(0)


class L1Penalty(Regularizer):
    """(strength / m) sum |W| over the weight matrices; m: the (global) batch size."""

    config = L1Config
    acts_on = "loss"
    member_wise = ("strength",)

    def loss(self, module: ClassifierModule, logits: torch.Tensor, y: torch.Tensor):
        absolutes = torch.stack([w.abs().flatten(1).sum(1) for w in self.weight_matrices(module)])
        return self.strength / module.global_batch_size(y) * absolutes.sum(0)


class LabelSmoothing(Regularizer):
    """Cross-entropy against labels smoothed by `value`, as F.cross_entropy(label_smoothing=e)
    computes it, (1 - e) nll + e mean_c(-log p_c): the plain cross-entropy plus
    e (mean_c(-log p_c) - nll), the term added here."""

    config = LabelSmoothingConfig
    acts_on = "loss"
    member_wise = ("value",)

    def loss(self, module: ClassifierModule, logits: torch.Tensor, y: torch.Tensor):
        members, batch, classes = logits.shape
        log_p = F.log_softmax(logits, dim=-1)
        nll = F.nll_loss(log_p.reshape(-1, classes), y.reshape(-1), reduction="none")
        uniform = -log_p.mean(-1)
        gap = (uniform - nll.view(members, batch)).mean(1)
        return self.value * gap


class Dropout(Regularizer):
    """Inverted dropout after every hidden activation: the network's `dropout` argument."""

    config = DropoutConfig
    acts_on = "forward"
    network_argument = "dropout"


class DropConnect(Regularizer):
    """DropConnect on the hidden weights: the network's `dropconnect` argument."""

    config = DropConnectConfig
    acts_on = "forward"
    network_argument = "dropconnect"


class Augment(Regularizer):
    """Random shifts and flips of each member's training images, from its own stream."""

    config = AugmentConfig
    acts_on = "batch"

    def __init__(self, settings, networks):
        super().__init__(settings, networks)
        augments = [
            RandomShiftFlip(s.max_shift, s.hflip) if s is not None else None for s in settings
        ]
        self.augment = MemberAugment(augments, networks.randomness)

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.augment(x)


class WeightDecay(Regularizer):
    """Decoupled weight decay, w <- w - lr * value * w, inside the optimizer's step: weight
    matrices decay; biases and norm gains and shifts only with `decay_norm_and_bias`
    (decaying them shrinks the scale and offset the network learned without regularizing its
    complexity)."""

    config = WeightDecayConfig
    acts_on = "optimizer"

    def optimizer_arguments(self, module: ClassifierModule) -> dict[str, Any]:
        networks = module.model
        is_weight = torch.zeros(networks.flat.shape[1], dtype=torch.bool)
        for name in module.weight_names:
            slot = networks.slots[name]
            is_weight[slot.start : slot.end] = True
        everything = torch.ones_like(is_weight)
        rows = [
            everything if s is not None and s.decay_norm_and_bias else is_weight
            for s in self.settings
        ]
        rates = torch.tensor([s.value if s is not None else 0.0 for s in self.settings])
        decay = torch.stack(rows).to(rates.dtype) * rates.unsqueeze(1)
        return {"decay_rate": decay.to(networks.flat)}


class GradClip(Regularizer):
    """Each member's gradient clipped by its norm or by value, inside the optimizer's step."""

    config = GradClipConfig
    acts_on = "optimizer"

    def optimizer_arguments(self, module: ClassifierModule) -> dict[str, Any]:
        from normlab.lit.optimizers import clip_columns

        clips = [
            (s.value, getattr(s.algorithm, "value", s.algorithm)) if s is not None else None
            for s in self.settings
        ]
        norm, value = clip_columns(clips, module.model.flat)
        return {"clip_norm": norm, "clip_value": value}


class EarlyStopping(Regularizer):
    """Lightning's EarlyStopping rule for every member (normlab.lit.early_stopping)."""

    config = EarlyStoppingConfig
    acts_on = "validation"

    def __init__(self, settings, networks):
        super().__init__(settings, networks)
        self.rule = MemberEarlyStopping(settings)

    def validation(self, metrics: dict[str, torch.Tensor], active: torch.Tensor) -> torch.Tensor:
        return self.rule(metrics, active)


REGULARIZERS: dict[str, type[Regularizer]] = {
    "l2": L2Penalty,
    "l1": L1Penalty,
    "weight_decay": WeightDecay,
    "dropout": Dropout,
    "dropconnect": DropConnect,
    "label_smoothing": LabelSmoothing,
    "grad_clip": GradClip,
    "early_stopping": EarlyStopping,
    "augment": Augment,
}


def regularizer_entries(regularizer_cfg: Any) -> dict[str, tuple[type[Regularizer], Any]]:
    """The regularizers a member's `regularizer` config turns on, by name: the class and its
    settings (typed by the class's `config`). Built-in options are the schema's keys; your own
    are `regularizer.extra.<name>` entries whose `_target_` names a Regularizer subclass."""
    entries: dict[str, tuple[type[Regularizer], Any]] = {}
    for name, kind in REGULARIZERS.items():
        settings = regularizer_cfg.get(name)
        if settings is not None:
            entries[name] = (kind, settings)
    for name, node in sorted((regularizer_cfg.get("extra") or {}).items()):
        if node is None:  # regularizer.extra.<name>=null turns one off
            continue
        where = f"regularizer.extra.{name}"
        if name in entries or name in REGULARIZERS:
            raise ConfigError(f"{where}: {name} is a built-in regularizer; name yours otherwise")
        kind = _located(where, node.get("_target_"))
        fields = {key: value for key, value in node.items() if key != "_target_"}
        entries[name] = (kind, typed_settings(OmegaConf.create(fields), kind.config, where))
    return entries


def _located(where: str, target: Any) -> type[Regularizer]:
    if not target:
        raise ConfigError(
            f"{where}._target_ is not set; name your Regularizer subclass "
            '(docs/extending.md, "A new regularizer")'
        )
    kind = import_target(f"{where}._target_={target}", str(target), "package.module.Class")
    if not (isinstance(kind, type) and issubclass(kind, Regularizer)):
        raise ConfigError(f"{where}._target_={target} is not a normlab Regularizer subclass")
    if getattr(kind, "acts_on", None) not in PLACES or kind.acts_on == "forward":
        raise ConfigError(
            f"{where}._target_={target}: acts_on must be one of "
            f"{', '.join(p for p in PLACES if p != 'forward')} (the network implements forward)"
        )
    return kind
